"""Battery cases for the recurrent layers, their cells, the wrappers and Masking."""

from cases import Case
from kerax.layers.core import Dense
from kerax.layers.masking import Masking
from kerax.layers.recurrent import GRU, LSTM, RNN, SimpleRNN
from kerax.layers.regularization import Dropout
from kerax.layers.rnn_cells import GRUCell, LSTMCell, SimpleRNNCell
from kerax.layers.wrappers import Bidirectional, TimeDistributed

SEQ = (2, 5, 3)

CASES = [
    # layers
    Case("simple_rnn_seq_backwards_dropout",
         lambda: SimpleRNN(3, return_sequences=True, go_backwards=True, dropout=0.2, recurrent_dropout=0.3),
         SEQ, training=True),
    Case("lstm", lambda: LSTM(4), SEQ),
    Case("lstm_seq_state", lambda: LSTM(4, return_sequences=True, return_state=True), SEQ),
    Case("lstm_dropout", lambda: LSTM(3, return_sequences=True, dropout=0.25, recurrent_dropout=0.25),
         SEQ, training=True),
    Case("lstm_initial_state", lambda: LSTM(4, unit_forget_bias=False, bias_initializer="ones"),
         [SEQ, (2, 4), (2, 4)]),
    Case("gru", lambda: GRU(4), SEQ),
    Case("gru_reset_before", lambda: GRU(4, reset_after=False, go_backwards=True), SEQ),
    Case("gru_nobias_initial_state", lambda: GRU(4, use_bias=False, return_state=True), [SEQ, (2, 4)]),
    Case("rnn_lstm_cell", lambda: RNN(LSTMCell(4), go_backwards=True, return_sequences=True), SEQ),
    # cells: one time step
    Case("simple_rnn_cell", lambda: SimpleRNNCell(4), (2, 3)),
    Case("lstm_cell", lambda: LSTMCell(4), [(2, 3), (2, 4), (2, 4)]),
    Case("gru_cell", lambda: GRUCell(4), [(2, 3), (2, 4)]),
    # wrappers
    Case("bidirectional_lstm", lambda: Bidirectional(LSTM(4)), SEQ),
    Case("bidirectional_gru_sum_seq", lambda: Bidirectional(GRU(3, return_sequences=True), "sum"), SEQ),
    Case("bidirectional_none_state", lambda: Bidirectional(SimpleRNN(2, return_state=True), None), SEQ),
    Case("bidirectional_backward_layer",
         lambda: Bidirectional(LSTM(2), "ave", backward_layer=GRU(2, go_backwards=True, name="bw")), SEQ),
    Case("time_distributed_dense", lambda: TimeDistributed(Dense(4)), SEQ),
    Case("time_distributed_dropout", lambda: TimeDistributed(Dropout(0.5)), SEQ, training=True),
    Case("masking", lambda: Masking(), SEQ),
]
