"""The stream contract between data and the Trainer, specified by what each side must do."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genai_course import data, train
from genai_course.data import (
    EvalData,
    MovableStream,
    ShardableStream,
    TensorLoader,
    TokenWindows,
    TrainingStream,
)
from genai_course.data.streams import missing_methods, require_protocol
from genai_course.train import TrainConfig, Trainer


def _cfg(**kw):
    base = dict(steps=3, batch_size=4, lr=1e-2, progress=False, log_every=1, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _mse(model, batch):
    x, y = batch
    return F.mse_loss(model(x), y)


def _xy(n=16):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, generator=g), torch.randn(n, 1, generator=g)


class _CountingStream:
    """A minimal whole stream: the three required methods and ``to``; no ``shard``."""

    def __init__(self):
        self.x, self.y = _xy()
        self.index, self.moved_to = 0, None

    def next_batch(self):
        i = self.index % 4
        self.index += 1
        return self.x[4 * i : 4 * i + 4], self.y[4 * i : 4 * i + 4]

    def state_dict(self):
        return {"index": self.index}

    def load_state_dict(self, state):
        self.index = int(state["index"])

    def to(self, device):
        self.moved_to = torch.device(device)
        return self


class _NextBatchOnly:
    def __init__(self):
        self.x, self.y = _xy()

    def next_batch(self):
        return self.x[:4], self.y[:4]


class _StateOnly:
    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_the_shipped_streams_implement_the_whole_contract():
    x, y = _xy()
    loader = TensorLoader(x, y, batch_size=4)
    windows = TokenWindows(torch.arange(50), block_size=4, batch_size=2)
    for stream in (loader, windows):
        assert isinstance(stream, TrainingStream)
        assert isinstance(stream, MovableStream)
        assert isinstance(stream, ShardableStream)
    assert isinstance(windows, EvalData)
    assert not isinstance(loader, EvalData)  # it is evaluated as an iterable, in order
    assert not isinstance(x, TrainingStream)


def test_tensorloader_is_one_class_from_train_and_from_data():
    assert train.TensorLoader is data.TensorLoader is TensorLoader
    assert TensorLoader.__module__ == "genai_course.data.streams"


def test_missing_methods_counts_none_and_non_callables_as_missing():
    stream = _CountingStream()
    assert missing_methods(stream, TrainingStream) == []
    stream.state_dict = None
    assert missing_methods(stream, TrainingStream) == ["state_dict"]
    assert missing_methods(object(), EvalData) == ["eval_batches"]


def test_require_protocol_names_the_protocol_the_role_and_what_is_missing():
    with pytest.raises(TypeError) as err:
        require_protocol(_NextBatchOnly(), TrainingStream, role="training data")
    message = str(err.value)
    assert "training data of type _NextBatchOnly" in message
    assert "TrainingStream" in message
    assert "it lacks state_dict(), load_state_dict()" in message
    assert require_protocol(_CountingStream(), TrainingStream) is not None


def test_trainer_refuses_a_stream_without_its_state_methods():
    with pytest.raises(TypeError, match=r"TrainingStream.*lacks state_dict\(\), load_state_dict"):
        Trainer(nn.Linear(3, 1), _NextBatchOnly(), _cfg(), loss_fn=_mse)


def test_trainer_refuses_a_stream_without_next_batch():
    with pytest.raises(TypeError, match=r"TrainingStream.*lacks next_batch\(\)$"):
        Trainer(nn.Linear(3, 1), _StateOnly(), _cfg(), loss_fn=_mse)


def test_trainer_refuses_data_that_is_neither_tensors_nor_a_stream_nor_iterable():
    with pytest.raises(TypeError, match="training data must be a Tensor.*got int"):
        Trainer(nn.Linear(3, 1), 7, _cfg(), loss_fn=_mse)


def test_trainer_trains_on_a_custom_stream_moves_it_and_saves_its_position():
    stream = _CountingStream()
    trainer = Trainer(nn.Linear(3, 1), stream, _cfg(), loss_fn=_mse)
    assert stream.moved_to == torch.device("cpu")
    trainer.fit()
    assert stream.index == 3
    assert trainer.state_dict()["data"] == {"index": 3}


def test_trainer_still_takes_a_plain_iterable_of_batches():
    x, y = _xy()
    batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 16, 4)]
    trainer = Trainer(nn.Linear(3, 1), batches, _cfg(steps=6), loss_fn=_mse)
    trainer.fit()
    assert trainer.step == 6


def test_trainer_evaluates_eval_data_through_its_eval_batches():
    x, y = _xy()

    class Held:
        calls = 0

        def eval_batches(self):
            Held.calls += 1
            yield x[:8], y[:8]

    model = nn.Linear(3, 1)
    trainer = Trainer(model, (x, y), _cfg(), loss_fn=_mse, val_data=Held())
    metrics = trainer.evaluate()
    assert Held.calls == 1
    with torch.no_grad():
        assert metrics["val_loss"] == pytest.approx(float(F.mse_loss(model(x[:8]), y[:8])))


def test_trainer_refuses_validation_data_it_cannot_iterate_naming_eval_batches():
    x, y = _xy()
    with pytest.raises(TypeError, match=r"validation data of type object.*EvalData.*eval_batches"):
        Trainer(nn.Linear(3, 1), (x, y), _cfg(), loss_fn=_mse, val_data=object())


def test_a_stream_without_shard_is_refused_under_data_parallel_training(monkeypatch):
    # Pretend to be rank 0 of 2 without a process group: the check comes before any collective.
    # Patched where the Trainer looks them up: the module of the loop, not the package.
    monkeypatch.setattr(train.trainer, "distributed_env", lambda: (0, 0, 2))
    monkeypatch.setattr(train.trainer, "_init_distributed", lambda device: None)
    with pytest.raises(TypeError, match=r"under DDP.*ShardableStream.*lacks shard\(\)"):
        Trainer(nn.Linear(3, 1), _CountingStream(), _cfg(), loss_fn=_mse)
