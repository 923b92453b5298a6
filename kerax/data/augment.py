"""Image augmentation as pure JAX functions on NHWC batches.

Each function takes an explicit ``jax.random`` key and a batch of images of shape
``(batch, height, width, channels)``, draws independent randomness for every example, and
returns a batch of a shape fixed by its arguments alone, so it runs under ``jax.jit`` (with
the size arguments static) and ``jax.vmap``, inside a compiled train step. Equal keys give
equal results.

The draws are public (``sample_flips``, ``sample_crop_offsets``, ``sample_shifts``): called
with the same key they return what the augmentation used, so a test or a debugging session
can reproduce an augmented batch exactly.

Example:
    >>> aug = compose(random_flip, partial(random_crop, size=(32, 32), padding=4))
    >>> images = aug(jax.random.fold_in(ts.rng, ts.step), images)
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from kerax import errors

Augmentation = Callable[[jax.Array, jax.Array], jax.Array]


def _check_images(images: ArrayLike, fn: str) -> jax.Array:
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise errors.ShapeError(
            f"{fn}: expected images of rank 4 (batch, height, width, channels); "
            f"received shape {errors.fmt_shape(images.shape)}"
        )
    return images


def _check_count(value: int, name: str, fn: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise errors.ConfigError(f"{fn}: {name} must be a non-negative int; received {name}={value!r}")
    return value


@partial(jax.jit, static_argnames=("batch", "horizontal", "vertical"))
def sample_flips(key: jax.Array, batch: int, horizontal: bool = True, vertical: bool = False) -> jax.Array:
    """The flips ``random_flip`` makes with ``key``: bools of shape ``(batch, 2)``,
    column 0 left-right, column 1 up-down, each true with probability 1/2 when enabled."""
    draws = jax.random.bernoulli(key, 0.5, (batch, 2))
    return draws & jnp.array([bool(horizontal), bool(vertical)])


def random_flip(key: jax.Array, images: ArrayLike, horizontal: bool = True,
                vertical: bool = False) -> jax.Array:
    """Flips each image left-right and/or up-down, each with probability 1/2.

    Input shape: ``(batch, height, width, channels)``. Output shape: the same.

    Raises:
      ShapeError: ``images`` is not of rank 4.
    """
    images = _check_images(images, "random_flip")
    return _flip(key, images, bool(horizontal), bool(vertical))


# The bodies are jitted so that an eager call compiles one program, not one per operation;
# inside a user's jit they simply inline.
@partial(jax.jit, static_argnames=("horizontal", "vertical"))
def _flip(key: jax.Array, images: jax.Array, horizontal: bool, vertical: bool) -> jax.Array:
    flips = sample_flips(key, images.shape[0], horizontal, vertical)
    images = jnp.where(flips[:, 0, None, None, None], images[:, :, ::-1], images)
    return jnp.where(flips[:, 1, None, None, None], images[:, ::-1], images)


@partial(jax.jit, static_argnames=("batch", "max_top", "max_left"))
def sample_crop_offsets(key: jax.Array, batch: int, max_top: int, max_left: int) -> jax.Array:
    """The corners ``random_crop`` uses with ``key``: int32 ``(batch, 2)`` of ``(top, left)``,
    uniform over ``0..max_top`` and ``0..max_left`` (both ends included)."""
    return jax.random.randint(key, (batch, 2), 0, jnp.array([max_top + 1, max_left + 1]))


def random_crop(key: jax.Array, images: ArrayLike, size: tuple[int, int] | int,
                padding: int = 0) -> jax.Array:
    """Pads each image with zeros by ``padding`` on every side, then crops ``size`` at a random spot.

    ``padding=4, size=(32, 32)`` on 32x32 images is the classic CIFAR augmentation; with
    ``padding=0`` and a smaller ``size`` it is a plain random crop.

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, size[0], size[1], channels)``.

    Raises:
      ShapeError: ``images`` is not of rank 4, or ``size`` is larger than the padded image.
      ConfigError: ``size`` is not two positive ints, or ``padding`` is negative.
    """
    images = _check_images(images, "random_crop")
    size = (size, size) if isinstance(size, int) and not isinstance(size, bool) else tuple(size)
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise errors.ConfigError(f"random_crop: size must be two positive ints (height, width); received size={size!r}")
    padding = _check_count(padding, "padding", "random_crop")
    h, w = images.shape[1:3]
    ph, pw = h + 2 * padding, w + 2 * padding
    if size[0] > ph or size[1] > pw:
        raise errors.ShapeError(
            f"random_crop: size {size} is larger than the padded image {(ph, pw)}; expected "
            f"size at most (height + 2*padding, width + 2*padding) for images of shape "
            f"{errors.fmt_shape(images.shape)} with padding={padding}"
        )
    return _crop(key, images, size, padding)


@partial(jax.jit, static_argnames=("size", "padding"))
def _crop(key: jax.Array, images: jax.Array, size: tuple[int, int], padding: int) -> jax.Array:
    n, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    corners = sample_crop_offsets(key, n, h + 2 * padding - size[0], w + 2 * padding - size[1])
    crop = lambda img, at: jax.lax.dynamic_slice(img, (at[0], at[1], 0), (size[0], size[1], c))
    return jax.vmap(crop)(padded, corners)


@partial(jax.jit, static_argnames=("batch", "max_dx", "max_dy"))
def sample_shifts(key: jax.Array, batch: int, max_dx: int, max_dy: int) -> jax.Array:
    """The shifts ``random_translate`` makes with ``key``: int32 ``(batch, 2)`` of ``(dy, dx)``,
    uniform over ``-max_dy..max_dy`` and ``-max_dx..max_dx``; positive moves down and right."""
    return jax.random.randint(key, (batch, 2), jnp.array([-max_dy, -max_dx]), jnp.array([max_dy + 1, max_dx + 1]))


def random_translate(key: jax.Array, images: ArrayLike, max_dx: int, max_dy: int,
                     fill: float = 0.0) -> jax.Array:
    """Shifts each image by a whole number of pixels, filling the uncovered border with ``fill``.

    An image shifted by ``(dy, dx)`` has ``out[y, x] = image[y - dy, x - dx]`` where that
    pixel exists and ``fill`` elsewhere.

    Input shape: ``(batch, height, width, channels)``. Output shape: the same.

    Raises:
      ShapeError: ``images`` is not of rank 4.
      ConfigError: ``max_dx`` or ``max_dy`` is not a non-negative int.
    """
    images = _check_images(images, "random_translate")
    max_dx = _check_count(max_dx, "max_dx", "random_translate")
    max_dy = _check_count(max_dy, "max_dy", "random_translate")
    return _translate(key, images, max_dx, max_dy, jnp.asarray(fill, images.dtype))


@partial(jax.jit, static_argnames=("max_dx", "max_dy"))
def _translate(key: jax.Array, images: jax.Array, max_dx: int, max_dy: int, fill: jax.Array) -> jax.Array:
    n, h, w, c = images.shape
    # Pad by the largest shift, then take a window: static shapes, one gather per image.
    padded = jnp.pad(images, ((0, 0), (max_dy, max_dy), (max_dx, max_dx), (0, 0)),
                     constant_values=fill)
    shifts = sample_shifts(key, n, max_dx, max_dy)
    window = lambda img, s: jax.lax.dynamic_slice(img, (max_dy - s[0], max_dx - s[1], 0), (h, w, c))
    return jax.vmap(window)(padded, shifts)


def compose(*fns: Augmentation) -> Augmentation:
    """Chains augmentations ``fn(key, images) -> images`` into one, each with its own key.

    The key is split into ``len(fns)`` keys, the i-th for the i-th function. Bind the other
    arguments with ``functools.partial``.

    Example:
      >>> aug = compose(random_flip, partial(random_translate, max_dx=2, max_dy=2))
      >>> out = aug(jax.random.key(0), images)

    Raises:
      ConfigError: an argument is not callable.
    """
    for i, fn in enumerate(fns):
        if not callable(fn):
            raise errors.ConfigError(
                f"compose: argument {i} must be a function (key, images) -> images; "
                f"received {type(fn).__name__}"
            )

    def augmented(key: jax.Array, images: ArrayLike) -> jax.Array:
        images = jnp.asarray(images)
        if not fns:
            return images
        for k, fn in zip(jax.random.split(key, len(fns)), fns):
            images = fn(k, images)
        return images

    return augmented
