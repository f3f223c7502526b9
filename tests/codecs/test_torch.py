"""torch tensors, state_dicts and checkpoints as safetensors files: exact, shared where
they were, read by the official library and reading its files."""

from __future__ import annotations

import collections
import contextlib
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

import typedstore as ts  # noqa: E402
from helpers import decode_error_without, imported_by_typedstore, join, mutate  # noqa: E402
from typedstore.codecs import TorchCodec  # noqa: E402
from typedstore.errors import DecodeError  # noqa: E402

codec = TorchCodec()

DTYPES = [
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.uint16,
    torch.int16,
    torch.uint32,
    torch.int32,
    torch.uint64,
    torch.int64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.float8_e4m3fnuz,
    torch.float8_e5m2fnuz,
    torch.float8_e8m0fnu,
]


def sample(dtype: Any, shape: tuple[int, ...] = (3, 4)) -> Any:
    """Every bit pattern matters: random bytes viewed as the dtype (NaNs included)."""
    count = int(np.prod(shape))
    itemsize = torch.empty(0, dtype=dtype).element_size()
    raw = torch.from_numpy(np.random.default_rng(0).integers(0, 256, count * itemsize, np.uint8))
    if dtype == torch.bool:
        return (raw % 2).to(torch.bool).reshape(shape)
    return raw.view(dtype).reshape(shape)


def same(a: Any, b: Any) -> bool:
    """The same type, dtype, shape, flags and bits."""
    return bool(
        type(a) is type(b)
        and a.dtype == b.dtype
        and a.shape == b.shape
        and a.requires_grad == b.requires_grad
        and torch.equal(bits(a), bits(b))
    )


def bits(tensor: Any) -> Any:
    return tensor.detach().reshape(-1).view(torch.uint8)


def round_trip(value: Any) -> Any:
    chosen = ts.registry.for_value(value)
    return chosen.decode(memoryview(join(chosen.encode(value))))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_comes_back_bit_for_bit(dtype: Any) -> None:
    tensor = sample(dtype)
    assert ts.registry.for_value(tensor).name == "torch"
    assert same(round_trip(tensor), tensor)
    state = {"w": tensor, "scalar": sample(dtype, ())}
    back = round_trip(state)
    assert type(back) is dict
    assert list(back) == ["w", "scalar"]
    assert all(same(back[k], state[k]) for k in state)


def test_layouts_flags_and_parameters() -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    for tensor in (base.t(), base[:, ::2], base[1:3], torch.empty(0, 5), torch.tensor(7.0)):
        back = round_trip(tensor)
        assert torch.equal(back, tensor)
        assert back.is_contiguous()
    grad = torch.ones(3, requires_grad=True)
    assert same(round_trip(grad), grad)
    parameter = torch.nn.Parameter(torch.randn(2, 2))
    back = round_trip(parameter)
    assert type(back) is torch.nn.Parameter
    assert same(back, parameter)
    conj = torch.tensor([1 + 2j], dtype=torch.complex64).conj()
    assert torch.equal(round_trip(conj), conj.resolve_conj())


Module: Any = torch.nn.Module


class Net(Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 8)
        self.norm = torch.nn.BatchNorm1d(8)
        self.head = torch.nn.Linear(8, 10, bias=False)
        self.head.weight = self.embed.weight  # tied

    def forward(self, x: Any) -> Any:
        return self.head(self.norm(self.embed(x)))


def trained() -> tuple[Net, Any]:
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):
        loss = model(torch.arange(10)).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval(), optimizer


def test_a_state_dict_loads_into_a_model_that_gives_the_same_outputs(store: Path) -> None:
    model, _ = trained()
    state = model.state_dict()
    io = ts.DataStoreIO.serialize_write(state, "weights")
    assert io.reference.codec == "torch"
    back = io.read_deserialize()
    assert type(back) is collections.OrderedDict
    assert list(back) == list(state)
    assert back._metadata == state._metadata  # type: ignore[attr-defined]
    assert back["head.weight"].data_ptr() == back["embed.weight"].data_ptr()  # still tied
    fresh = Net()
    fresh.load_state_dict(back)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(torch.arange(10)), model(torch.arange(10)))
    # The file is a plain safetensors file for the official library, tied names stored once.
    path = Path(store) / f"{io.reference.key}"
    loaded = safetensors_torch.load_file(path)
    assert loaded.keys() == state.keys() - {"head.weight"}
    with open(path, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    assert header["__metadata__"]["format"] == "pt"


def test_a_training_checkpoint_comes_back_and_resumes(store: Path) -> None:
    model, optimizer = trained()
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}
    io = ts.DataStoreIO.serialize_write(checkpoint, "ckpt")
    assert io.reference.codec == "tree"
    back = io.read_deserialize()
    assert back["epoch"] == 3
    assert back["optimizer"]["param_groups"] == checkpoint["optimizer"]["param_groups"]
    state = back["optimizer"]["state"]
    assert state.keys() == checkpoint["optimizer"]["state"].keys()  # int keys
    for key, values in state.items():
        assert all(same(values[k], v) for k, v in checkpoint["optimizer"]["state"][key].items())
    resumed = Net()
    resumed.load_state_dict(back["model"])
    resumed_optimizer = torch.optim.AdamW(resumed.parameters(), lr=1e-3)
    resumed_optimizer.load_state_dict(back["optimizer"])
    assert back["model"]["head.weight"].data_ptr() == back["model"]["embed.weight"].data_ptr()


def test_tensors_in_a_datastore_and_zero_copy(store: Path) -> None:
    weights = {"w": sample(torch.bfloat16, (64, 64)), "b": sample(torch.float32, (64,))}
    url = ts.DataStore(weights=weights, step=10).to_url("runs")
    lazy = ts.DataStore.from_url(url, lazy=True)
    assert all(same(lazy.weights[k], v) for k, v in weights.items())
    io = ts.DataStoreIO.serialize_write(weights, "runs")
    view = io.read_deserialize(zero_copy=True)
    assert all(same(view[k], v) for k, v in weights.items())


def test_the_numpy_binding_reads_the_files_too(tmp_path: Path) -> None:
    import safetensors.numpy

    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "n": torch.tensor(3)}
    path = tmp_path / "w.safetensors"
    path.write_bytes(join(codec.encode(state)))
    loaded = safetensors.numpy.load_file(path)
    assert loaded.keys() == state.keys()
    assert all(np.array_equal(loaded[k], v.numpy()) for k, v in state.items())


def test_typedstore_reads_files_the_official_library_writes(tmp_path: Path) -> None:
    tensors = {"a": sample(torch.bfloat16), "b": sample(torch.int64, (5,))}
    data = safetensors_torch.save(tensors, metadata={"format": "pt"})
    back = codec.decode(memoryview(data))
    assert type(back) is dict
    assert all(same(back[k], v) for k, v in tensors.items())
    one = safetensors_torch.save({"only": tensors["a"]})
    assert same(codec.decode(memoryview(one), torch.Tensor), tensors["a"])


def test_what_safetensors_cannot_hold_is_not_taken() -> None:
    for value in (
        torch.zeros(2, dtype=torch.complex128),
        torch.zeros(2).to_sparse(),
        torch.zeros(2, device="meta"),
        {},
        {"a": torch.nn.Parameter(torch.zeros(1))},  # a state_dict holds plain tensors
        {1: torch.zeros(1)},
    ):
        assert not codec.accepts(value), value


ALIASED = {"typedstore.kind": "dict", "typedstore.order": '["a", "b"]'}


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"typedstore.kind": "nope"}, "unknown kind"),
        ({"typedstore.kind": "tensor"}, "expected one tensor"),
        ({"typedstore.kind": "dict", "typedstore.requires_grad": '["zz"]'}, "missing tensor"),
        ({"typedstore.kind": "dict", "typedstore.requires_grad": "[[[1]]]"}, "JSON"),
        (ALIASED | {"typedstore.aliases": '{"a": "zz"}'}, "alias"),
        (ALIASED | {"typedstore.aliases": '{"c": "a"}', "typedstore.order": '["a"]'}, "order"),
    ],
)
def test_malformed_metadata_is_a_decode_error(metadata: dict[str, str], message: str) -> None:
    data = safetensors_torch.save({"a": torch.zeros(1), "b": torch.ones(1)}, metadata=metadata)
    with pytest.raises(DecodeError, match=message):
        codec.decode(memoryview(data))


def fuzzed_samples() -> dict[str, bytes]:
    model, optimizer = trained()
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 2}
    return {
        "torch": join(codec.encode(model.state_dict())),
        "tree": join(ts.registry.get("tree").encode(checkpoint)),
    }


FUZZED = fuzzed_samples()


@pytest.mark.parametrize("name", sorted(FUZZED))
@settings(deadline=2000, max_examples=150)
@given(data=st.data())
def test_mutated_files_are_decode_errors(name: str, data: st.DataObject) -> None:
    with contextlib.suppress(DecodeError):
        ts.registry.get(name).decode(memoryview(bytes(mutate(data, FUZZED[name]))), None)


def test_importing_typedstore_imports_no_torch() -> None:
    assert imported_by_typedstore("torch") == []


def test_reading_a_tensor_without_torch_names_the_extra(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    path.write_bytes(join(codec.encode(torch.ones(2))))
    assert "pip install 'typedstore[torch]'" in decode_error_without("torch", "torch", path)


def test_metadata_travels_with_a_tensor_file(store: Path) -> None:
    tensors = {"w": sample(torch.bfloat16), "b": sample(torch.float32, (3,))}
    metadata = {"format": "pt", "license": "mit"}
    io = ts.DataStoreIO.serialize_write(ts.TensorFile(tensors, metadata), "weights")
    assert io.reference.codec == "torch"
    back = io.read_deserialize()
    assert type(back) is ts.TensorFile
    assert dict(back.metadata) == metadata  # nothing added, nothing lost
    assert all(same(back.tensors[k], v) for k, v in tensors.items())
    # A file another tool wrote, read with its metadata; and plain state_dicts as files.
    path = Path(store) / "foreign.safetensors"
    safetensors_torch.save_file(tensors, path, metadata={"format": "pt", "step": "7"})
    put = ts.DataStoreIO.write(path.read_bytes(), "weights", "safetensors")
    as_file = ts.DataStoreIO(ts.Reference(put.reference.key, "torch")).read_deserialize(
        ts.TensorFile
    )
    assert dict(as_file.metadata) == {"format": "pt", "step": "7"}
    assert all(same(as_file.tensors[k], v) for k, v in tensors.items())
    state = ts.DataStoreIO.serialize_write(tensors, "weights").read_deserialize(ts.TensorFile)
    assert dict(state.metadata) == {"format": "pt"}


def test_weights_in_a_run_load_into_a_model_with_the_same_outputs(store: Path) -> None:
    model, _ = trained()
    experiment = ts.create_experiment("weights")
    with experiment.run() as run:
        run.fields.state = model.state_dict()
        run.fields.outputs = ts.DataStore(weights=model.state_dict(), step=3)
    experiment.persist()
    fields = ts.load_experiment("weights").runs[0].fields
    for state in (fields.state, fields.outputs.weights):
        fresh = Net()
        fresh.load_state_dict(state)
        fresh.eval()
        with torch.no_grad():
            assert torch.equal(fresh(torch.arange(10)), model(torch.arange(10)))
