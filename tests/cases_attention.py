"""Battery cases for the attention layers (MultiHeadAttention, Attention, AdditiveAttention).

Attention's weights (``scale``, ``concat_score_weight``) start at ones whatever the key, so
its cases here have no weights; tests/test_attention.py covers the weighted variants.
"""

from cases import Case
from kerax.layers.attention import AdditiveAttention, Attention, MultiHeadAttention

CASES = [
    Case("multi_head_attention", lambda: MultiHeadAttention(2, 3), (2, 4, 5)),
    Case("multi_head_attention_cross", lambda: MultiHeadAttention(
        2, 3, value_dim=4, output_shape=6, use_causal_mask=True), [(2, 4, 5), (2, 6, 7), (2, 6, 3)]),
    Case("multi_head_attention_dropout", lambda: MultiHeadAttention(2, 3, dropout=0.3, use_bias=False),
         (2, 4, 5), training=True),
    Case("multi_head_attention_axes_scores", lambda: MultiHeadAttention(
        2, 3, attention_axes=(2,), output_shape=(2, 3), return_attention_scores=True),
         [(2, 3, 4, 5), (2, 3, 2, 5)]),
    Case("attention", lambda: Attention(), [(2, 4, 3), (2, 5, 3)]),
    Case("attention_causal_scores", lambda: Attention(use_causal_mask=True, return_attention_scores=True),
         [(2, 4, 3), (2, 5, 2), (2, 5, 3)]),
    Case("additive_attention", lambda: AdditiveAttention(), [(2, 4, 3), (2, 5, 3)]),
    Case("additive_attention_causal", lambda: AdditiveAttention(use_causal_mask=True, dropout=0.2),
         [(2, 4, 3), (2, 4, 3)]),
]
