"""Float64 NumPy transcriptions of the LRU (Orvieto et al. 2023) and RG-LRU (De et al. 2024).

Written in the papers' own notation and with NumPy's complex arithmetic (the library keeps the
LRU's state as real and imaginary parts), column vectors: ``B [N, D]``, ``C [D, N]``. The fused
row-vector params of rnnjax are read through their documented layout (``b_re = Re(B)^T``, gate
order r, i, u), so a transposed kernel or a swapped gate shows up as a mismatch here.
"""

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def lru_matrices(params):
    """``(lambda [N], gamma [N], B [N, D], C [D, N], D [D])``, complex where the paper's are."""
    p = {k: np.asarray(v, np.float64) for k, v in params._asdict().items()}
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    gamma = np.exp(p["gamma_log"])
    b = (p["b_re"] + 1j * p["b_im"]).T
    c = (p["c_re"] + 1j * p["c_im"]).T
    return lam, gamma, b, c, p["d"]


def lru_run(params, xs, h0=None):
    """LRU eqs. (paper Sec. 3): ``x_k = diag(lambda) x_{k-1} + gamma * (B u_k)``,
    ``y_k = Re(C x_k) + D u_k``. Returns complex states ``[T, N]`` and outputs ``[T, D]``."""
    lam, gamma, b, c, d = lru_matrices(params)
    h = np.zeros(lam.shape, np.complex128) if h0 is None else np.asarray(h0, np.complex128)
    states, outputs = [], []
    for x in np.asarray(xs, np.float64):
        h = lam * h + gamma * (b @ x)
        states.append(h)
        outputs.append((c @ h).real + d * x)
    return np.array(states), np.array(outputs)


def lru_ring_init(u1, u2, r_min, r_max, max_phase):
    """The paper's ring initialisation from uniforms ``u1, u2``: ``(nu_log, theta_log,
    gamma_log)`` with ``nu = -log(u1 (r_max^2 - r_min^2) + r_min^2) / 2``, ``theta = max_phase
    u2`` and ``gamma = sqrt(1 - |lambda|^2)``."""
    nu = -0.5 * np.log(u1 * (r_max**2 - r_min**2) + r_min**2)
    theta = max_phase * u2
    gamma = np.sqrt(1.0 - np.abs(np.exp(-nu + 1j * theta)) ** 2)
    return np.log(nu), np.log(theta), np.log(gamma)


def rg_lru_run(params, xs, h0=None, c=8.0):
    """Griffin's RG-LRU (De et al. 2024, eqs. 1-4) on the input ``u_t = x_t W_u + b_u``:
    ``r_t = sigma(W_a x_t + b_a)``, ``i_t = sigma(W_x x_t + b_x)``, ``a_t = a^(c r_t)`` with
    ``a = sigma(Lambda)``, ``h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t u_t)``. Returns ``[T, H]``."""
    w, b = np.asarray(params.w_x, np.float64), np.asarray(params.b, np.float64)
    a = sigmoid(np.asarray(params.a_logit, np.float64))
    hidden = a.shape[0]
    h = np.zeros(hidden) if h0 is None else np.asarray(h0, np.float64)
    states = []
    for x in np.asarray(xs, np.float64):
        k = x @ w + b
        r, i, u = k[:hidden], k[hidden : 2 * hidden], k[2 * hidden :]
        a_t = np.power(a, c * sigmoid(r))
        h = a_t * h + np.sqrt(1.0 - a_t**2) * (sigmoid(i) * u)
        states.append(h)
    return np.array(states)


def rg_lru_decays(params, xs, c=8.0):
    """``a_t [T, H]`` of the RG-LRU: ``d h_T / d h_k = diag(a_{k+1} ... a_T)``."""
    w, b = np.asarray(params.w_x, np.float64), np.asarray(params.b, np.float64)
    a = sigmoid(np.asarray(params.a_logit, np.float64))
    hidden = a.shape[0]
    r = sigmoid(np.asarray(xs, np.float64) @ w[:, :hidden] + b[:hidden])
    return np.power(a, c * r)
