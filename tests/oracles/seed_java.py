"""The seed's Java ``EnterpriseSequenceInferenceEngine`` transcribed loop for loop (the thread
pool aside), in float64 like Java's ``double``: the oracle for the seed-layout importers and the
inference engine."""

import math

import numpy as np


def java_forward_vanilla_rnn(input_batch, w_x, w_h, bias):
    """``forwardVanillaRNNParallel``: ``w_x [H][D]``, ``w_h [H][H]``, ``bias [H]``; every sequence
    runs for ``len(input_batch[0])`` steps, as in Java."""
    batch_size, seq_length, hidden_dim = len(input_batch), len(input_batch[0]), len(w_h)
    final_hidden_states = np.zeros((batch_size, hidden_dim))
    for b in range(batch_size):
        current_hidden, next_hidden = np.zeros(hidden_dim), np.zeros(hidden_dim)
        for t in range(seq_length):
            current_input = input_batch[b][t]
            for h in range(hidden_dim):
                net_sum = 0.0
                for x in range(len(current_input)):
                    net_sum += current_input[x] * w_x[h][x]
                for r in range(hidden_dim):
                    net_sum += current_hidden[r] * w_h[h][r]
                net_sum += bias[h]
                next_hidden[h] = math.tanh(net_sum)
            current_hidden[:] = next_hidden
        final_hidden_states[b] = current_hidden
    return final_hidden_states


def java_forward_lstm(input_batch, w_gate, b_gate, feature_dim):
    """``forwardLSTMParallel``: ``w_gate [4][H][D+H]`` (forget, input, candidate, output) acting
    on ``[x_t, h_{t-1}]``, ``b_gate [4][H]``. ``feature_dim`` is passed so length 0 works."""
    batch_size, seq_length, hidden_dim = len(input_batch), len(input_batch[0]), len(w_gate[0])
    combined_dim = feature_dim + hidden_dim
    output = np.zeros((batch_size, hidden_dim))

    def sigmoid(v):
        return 1.0 / (1.0 + math.exp(-v))

    for b in range(batch_size):
        h_state, c_state = np.zeros(hidden_dim), np.zeros(hidden_dim)
        concat_input = np.zeros(combined_dim)
        for t in range(seq_length):
            concat_input[:feature_dim] = input_batch[b][t]
            concat_input[feature_dim:] = h_state
            f_gate, i_gate = np.zeros(hidden_dim), np.zeros(hidden_dim)
            c_cand, o_gate = np.zeros(hidden_dim), np.zeros(hidden_dim)
            for h in range(hidden_dim):
                sums = [0.0, 0.0, 0.0, 0.0]
                for j in range(combined_dim):
                    for k in range(4):
                        sums[k] += concat_input[j] * w_gate[k][h][j]
                f_gate[h] = sigmoid(sums[0] + b_gate[0][h])
                i_gate[h] = sigmoid(sums[1] + b_gate[1][h])
                c_cand[h] = math.tanh(sums[2] + b_gate[2][h])
                o_gate[h] = sigmoid(sums[3] + b_gate[3][h])
            for h in range(hidden_dim):
                c_state[h] = f_gate[h] * c_state[h] + i_gate[h] * c_cand[h]
                h_state[h] = o_gate[h] * math.tanh(c_state[h])
        output[b] = h_state
    return output
