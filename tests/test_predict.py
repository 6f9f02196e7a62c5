"""What a trial records per test example: its prediction, confidence and the true class's probability."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from repsweep.orchestrator.training.train import predict


def test_predict_matches_the_naive_softmax_per_example_in_any_batching():
    torch.manual_seed(0)
    model = nn.Linear(5, 4)
    x, y = torch.randn(11, 5), torch.randint(0, 4, (11,))
    p = torch.softmax(model(x), dim=1).detach().numpy()  # (11, 4), the naive way
    for batch in (3, 11, 1024):  # batches of 3 leave a short one; the rows must not shift
        loss, pred, conf, p_true = predict(model, x, y, batch=batch)
        np.testing.assert_array_equal(pred, p.argmax(1))
        np.testing.assert_allclose(conf, p.max(1), rtol=1e-6)
        np.testing.assert_allclose(p_true, p[np.arange(11), y.numpy()], rtol=1e-6)
        assert abs(loss - -np.log(p[np.arange(11), y.numpy()]).mean()) < 1e-5  # mean cross-entropy, float32
    right = pred == y.numpy()
    assert right.any() and (~right).any()
    np.testing.assert_array_equal(p_true[right], conf[right])  # right: the true class is the top one
    assert (p_true[~right] < conf[~right]).all()
