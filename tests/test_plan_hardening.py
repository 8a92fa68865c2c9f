"""Plan files are pure data: every case of the security review (issue 14) is a GraphcError.

Each test edits a saved plan (or a graph's JSON) the way an attacker or a damaged disk would and
checks the loader refuses it with a GraphcError naming the problem: no code from the file runs,
no kernel sees an out-of-range window, no arena is allocated as asked, no raw Python exception.
"""

import json
import struct
import zipfile

import numpy as np
import pytest

import graphc
from graphc import functional as F
from graphc import load_plan, nn
from graphc.cli import main as cli_main
from graphc.ir import GraphcError, MemoryPlan, graph_from_json, graph_to_json, parse_graph
from graphc.passes import plan_memory
from graphc.runtime import Plan


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 4)

    def forward(self, x):
        return F.softmax(F.relu(self.lin(x)), dim=-1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One small saved plan (a fused matmul and a fused reduction with a const), its input and output."""
    graphc.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    plan = graphc.compile(Small(), x)
    path = tmp_path_factory.mktemp("plans") / "small.gcp"
    plan.save(str(path))
    return path, x, plan(x)


def read_meta(path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("plan.json"))


def rewrite(src, dst, meta=None, text=None, arrays=None, compression=zipfile.ZIP_DEFLATED) -> str:
    """A copy of plan file ``src`` at ``dst`` with plan.json (and/or arrays.npz) replaced."""
    with zipfile.ZipFile(src) as zf:
        old_json, old_arrays = zf.read("plan.json"), zf.read("arrays.npz")
    if meta is not None:
        text = json.dumps(meta)
    with zipfile.ZipFile(dst, "w", compression) as zf:
        zf.writestr("plan.json", old_json if text is None else text)
        zf.writestr("arrays.npz", old_arrays if arrays is None else arrays)
    return str(dst)


def edited(saved, tmp_path, edit) -> str:
    """The saved plan with ``edit(meta)`` applied to its plan.json."""
    meta = read_meta(saved[0])
    edit(meta)
    return rewrite(saved[0], tmp_path / "edited.gcp", meta)


def fused_nodes(meta):
    return [n for n in meta["graph"]["nodes"] if n["op"] == "fused"]


def const_node(meta):
    return next(n for f in fused_nodes(meta) for n in f["body"]["nodes"] if n["op"] == "const")


# ------------------------------------------------------------------ 1. code injection
INJECTED = "pointwise\nimport os; open({marker!r}, 'w').close()"


def injections(marker):
    """Edits that each try to smuggle Python into generated kernel source through a string."""
    code = INJECTED.format(marker=str(marker))

    def kind(meta):
        fused_nodes(meta)[1]["attrs"]["kind"] = code

    def const_dtype(meta):
        const_node(meta)["attrs"]["dtype"] = "f32')\nimport os; open(" + repr(str(marker)) + ", 'w')#"

    def const_value(meta):
        const_node(meta)["attrs"]["value"] = "0.0)\nopen(" + repr(str(marker)) + ", 'w')#"

    def output_dtype(meta):
        fused_nodes(meta)[1]["body"]["nodes"][0]["outputs"][0]["dtype"] = code

    def value_name(meta):
        fused_nodes(meta)[1]["body"]["nodes"][0]["outputs"][0]["name"] = code

    def source(meta):
        fused_nodes(meta)[1]["source"] = code

    def extra_attr(meta):
        fused_nodes(meta)[1]["attrs"]["title"] = code

    return [kind, const_dtype, const_value, output_dtype, value_name, source, extra_attr]


@pytest.mark.parametrize("case", range(7))
def test_no_string_from_a_plan_reaches_kernel_source(saved, tmp_path, case):
    marker = tmp_path / "MARKER"
    edit = injections(marker)[case]
    path = edited(saved, tmp_path, edit)
    with pytest.raises(GraphcError):
        graphc.load_plan(path)(saved[1])
    assert not marker.exists()


def test_printable_names_are_only_names(saved, tmp_path):
    """A value name that reads like code is accepted as a name and stays one."""
    marker = tmp_path / "MARKER"
    evil = f"__import__('os').system('touch {marker}')"

    def rename(meta):
        body = fused_nodes(meta)[1]["body"]
        old = body["nodes"][0]["outputs"][0]["name"]
        body["nodes"][0]["outputs"][0]["name"] = evil
        for n in body["nodes"]:
            n["inputs"] = [evil if i == old else i for i in n["inputs"]]

    plan = graphc.load_plan(edited(saved, tmp_path, rename))
    np.testing.assert_array_equal(plan(saved[1]), saved[2])
    assert not marker.exists()


# ------------------------------------------------------------------ 2. window attributes
WINDOW_GRAPHS = {
    "max_pool2d": """graph g(%x: f32[1,2,6,6]) {
          %y = max_pool2d(%x) {kernel=(2, 2), stride=(2, 2), dilation=(1, 1)} : f32[1,2,3,3]
          return %y
        }""",
    "im2col": """graph g(%x: f32[1,2,6,6]) {
          %y = im2col(%x) {kernel=(2, 2), stride=(2, 2), padding=(0, 0), dilation=(1, 1)} : f32[1,8,9]
          return %y
        }""",
    "col2im": """graph g(%x: f32[1,8,9]) {
          %y = col2im(%x) {kernel=(2, 2), stride=(2, 2), padding=(0, 0), dilation=(1, 1),
          image_shape=(1, 2, 6, 6)} : f32[1,2,6,6]
          return %y
        }""",
}
BAD_WINDOWS = [
    ("kernel", [-1, 2], "must lie in"),
    ("kernel", [2, -3], "must lie in"),
    ("kernel", [0, 2], "must lie in"),
    ("kernel", [1.5, 2], "must be an int"),
    ("kernel", [2.0, 2], "must be an int"),
    ("kernel", [2], "must have 2 entries"),
    ("kernel", "22", "must be a list"),
    ("dilation", [-1, 1], "must lie in"),
    ("dilation", [0, 1], "must lie in"),
    ("stride", [0, 1], "must lie in"),
    ("stride", [-2, 2], "must lie in"),
    ("stride", [2, 0.5], "must be an int"),
    ("stride", [True, 2], "must be an int"),
]


def _window_json(op):
    text = WINDOW_GRAPHS[op].replace(",\n          image_shape", ", image_shape")
    return graph_to_json(parse_graph(text))


@pytest.mark.parametrize("op", sorted(WINDOW_GRAPHS))
@pytest.mark.parametrize("key, value, message", BAD_WINDOWS)
def test_window_attributes_are_positive_ints(op, key, value, message):
    data = _window_json(op)
    graph_from_json(json.loads(json.dumps(data)))  # the unedited graph reads back
    data["nodes"][0]["attrs"][key] = value
    with pytest.raises(GraphcError, match=f"{op}: attribute '{key}' {message}"):
        graph_from_json(data)
    # The same attribute through the builder API.
    g = parse_graph(WINDOW_GRAPHS[op].replace(",\n          image_shape", ", image_shape"))
    node = g.nodes[0]
    with pytest.raises(GraphcError, match=message):
        g.add_node(
            node.op, node.inputs, {**node.attrs, key: tuple(value) if isinstance(value, list) else value}
        )


@pytest.mark.parametrize("op", ["im2col", "col2im"])
def test_negative_padding_is_refused(op):
    data = _window_json(op)
    data["nodes"][0]["attrs"]["padding"] = [-1, 0]
    with pytest.raises(GraphcError, match="attribute 'padding' must lie in"):
        graph_from_json(data)


def test_window_attributes_refused_in_the_text_form_too():
    text = WINDOW_GRAPHS["max_pool2d"].replace("dilation=(1, 1)", "dilation=(-1, 1)")
    with pytest.raises(GraphcError, match="max_pool2d: attribute 'dilation' must lie in"):
        parse_graph(text)


# ------------------------------------------------------------------ 3. aliases that are not views
VIEW_GRAPH = """graph g(%x: f32[4,16]) {
  %p = exp(%x) : f32[4,16]
  %s = slice(%p) {starts=(0, 0), stops=(4, 16), steps=(2, 1)} : f32[2,16]
  %r = reshape(%s) {shape=(32,)} : f32[32]
  %t = neg(%r) : f32[32]
  return %t
}"""


def test_an_edited_alias_on_a_strided_slice_is_refused(tmp_path):
    g = parse_graph(VIEW_GRAPH)
    x = np.arange(64, dtype=np.float32).reshape(4, 16) / 64
    path = tmp_path / "views.gcp"
    Plan(g, plan_memory(g), "reference").save(str(path))
    np.testing.assert_allclose(graphc.load_plan(str(path))(x), -np.exp(x[::2]).reshape(32), rtol=1e-6)
    meta = read_meta(path)
    bufs = {b["value"]: b for b in meta["memory_plan"]["buffers"]}
    assert bufs["s"]["alias_of"] is None
    bufs["s"]["alias_of"] = bufs["p"]["alias_of"] or "p"  # the runtime would skip the slice
    bufs["s"]["offset"] = bufs["p"]["offset"]
    with pytest.raises(GraphcError, match="inconsistent memory plan.*not a view"):
        load_plan(rewrite(path, tmp_path / "bad.gcp", meta))


# ------------------------------------------------------------------ 4. sizes
def test_a_zip_bomb_is_refused_before_it_inflates(saved, tmp_path):
    meta = read_meta(saved[0])
    meta["padding"] = " " * (8 * 2**20)  # 8 MiB of spaces deflate about 1000x
    with pytest.raises(GraphcError, match="plan.json' inflates .*over 200x"):
        load_plan(rewrite(saved[0], tmp_path / "bomb.gcp", meta))
    meta["padding"] = " " * (65 * 2**20)
    with pytest.raises(GraphcError, match="plan.json holds .* more than the limit"):
        load_plan(rewrite(saved[0], tmp_path / "big.gcp", meta, compression=zipfile.ZIP_STORED))


def test_arrays_npz_has_a_size_limit(saved, tmp_path, monkeypatch):
    load_plan(str(saved[0]))
    monkeypatch.setenv("GRAPHC_MAX_ARRAYS_BYTES", "100")
    with pytest.raises(GraphcError, match="arrays.npz holds .* more than the limit"):
        load_plan(str(saved[0]))


def test_an_edited_arena_size_is_refused(saved, tmp_path, monkeypatch):
    def arena(n):
        return lambda meta: meta["memory_plan"].__setitem__("arena_bytes", n)

    with pytest.raises(GraphcError, match="side by side"):
        load_plan(edited(saved, tmp_path, arena(8 * 2**30)))
    with pytest.raises(GraphcError, match="arena_bytes must be at least 0, at most"):
        load_plan(edited(saved, tmp_path, arena(32 * 2**30)))
    monkeypatch.setenv("GRAPHC_MAX_ARENA_BYTES", "64")
    with pytest.raises(GraphcError, match="arena_bytes must be at least 0, at most 64"):
        load_plan(str(saved[0]))


# ------------------------------------------------------------------ 5. raw exceptions
def _member_data_start(data: bytes, name: str) -> int:
    with zipfile.ZipFile(__import__("io").BytesIO(data)) as zf:
        info = zf.getinfo(name)
    at = info.header_offset
    name_len, extra_len = struct.unpack("<HH", data[at + 26 : at + 30])
    return at + 30 + name_len + extra_len


def test_bit_flips_in_the_compressed_stream(saved, tmp_path):
    data = saved[0].read_bytes()
    start = _member_data_start(data, "plan.json")
    for k in range(0, 400, 7):
        flipped = bytearray(data)
        flipped[start + k] ^= 0x55
        path = tmp_path / "flipped.gcp"
        path.write_bytes(bytes(flipped))
        with pytest.raises(GraphcError, match="corrupt"):
            load_plan(str(path))


def _set_flags(data: bytes, name: str, flag: int = 0, method: int | None = None) -> bytes:
    """``data`` with one member's general-purpose flags or-ed with ``flag`` / its method replaced,
    in both the local and the central header."""
    out = bytearray(data)
    with zipfile.ZipFile(__import__("io").BytesIO(data)) as zf:
        info = zf.getinfo(name)
    local = info.header_offset
    central = data.index(b"PK\x01\x02")  # the first central directory entry
    while data[central + 46 : central + 46 + len(name)] != name.encode():
        central = data.index(b"PK\x01\x02", central + 4)
    for flag_at in (local + 6, central + 8):
        struct.pack_into("<H", out, flag_at, struct.unpack_from("<H", out, flag_at)[0] | flag)
        if method is not None:
            struct.pack_into("<H", out, flag_at + 2, method)
    return bytes(out)


@pytest.mark.parametrize("flag, method, message", [(1, None, "encrypted"), (0, 99, "compression method")])
def test_encrypted_or_unknown_compression_members(saved, tmp_path, flag, method, message):
    path = tmp_path / "odd.gcp"
    path.write_bytes(_set_flags(saved[0].read_bytes(), "plan.json", flag, method))
    with pytest.raises(GraphcError, match=message):
        load_plan(str(path))
    lzma = rewrite(saved[0], tmp_path / "lzma.gcp", compression=zipfile.ZIP_LZMA)
    with pytest.raises(GraphcError, match="compression method"):
        load_plan(lzma)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[1, 2, 3]", "plan.json holds a list"),
        ('"plan"', "plan.json holds a str"),
        ("[" * 100_000 + "]" * 100_000, "plan.json is not valid JSON"),
        ("{" + '"a":' * 10 + "1", "plan.json is not valid JSON"),
        ("\xff\xfe{", "plan.json is not valid JSON"),
        (
            '{"format": "graphc-plan", "version": 1, "graph": ' + "[" * 50_000 + "]" * 50_000 + "}",
            "RecursionError|graph",
        ),
    ],
)
def test_plan_json_that_is_not_a_plan(saved, tmp_path, text, message):
    with pytest.raises(GraphcError, match=message):
        load_plan(rewrite(saved[0], tmp_path / "j.gcp", text=text.encode("latin-1")))


def _set(path_keys, value):
    def edit(meta):
        obj = meta
        for k in path_keys[:-1]:
            obj = obj[k] if not callable(k) else k(obj)
        obj[path_keys[-1]] = value

    return edit


def _const_attrs(meta):
    return const_node(meta)["attrs"]


def _first_buffer(meta):
    return meta["memory_plan"]["buffers"][0]


FIELD_EDITS = [
    (_set(["graph"], None), "graph JSON graph must be an object"),
    (_set(["graph"], [1]), "graph JSON graph must be an object"),
    (_set(["graph", "nodes"], {"a": 1}), "graph.nodes must be of type list"),
    (_set(["graph", "inputs", 0, "shape"], [3, "6"]), "must be an int"),
    (_set(["graph", "inputs", 0, "shape"], [3, -6]), "must lie in"),
    (_set(["graph", "inputs", 0, "dtype"], "c64"), "dtype must be one of"),
    (_set(["graph", "inputs", 0, "kind"], "code"), "kind must be one of"),
    (_set(["graph", "outputs", 0], "nowhere"), "unknown value 'nowhere'"),
    (_set(["graph", "updates"], {"x": 0}), "must name a param/state input"),
    (_set([_const_attrs, "value"], "0.0"), "const: attribute 'value' must be a number"),
    (_set([_const_attrs, "value"], 10**400), "must lie in"),
    (_set([_const_attrs, "value"], 2**70), "must lie in"),
    (_set([_const_attrs, "value"], [0.0]), "must be a number"),
    (_set([_const_attrs, "dtype"], "float32"), "attribute 'dtype' must be one of"),
    (_set(["memory_plan", "alignment"], 0), "alignment must be at least 1"),
    (_set(["memory_plan", "alignment"], 48), "alignment must be a power of two"),
    (_set(["memory_plan"], None), "memory plan must be an object"),
    (_set(["memory_plan", "buffers"], {}), "buffers must be a list"),
    (_set([_first_buffer, "offset"], 1.5), r"buffers\[0\].offset must be an int"),
    (_set([_first_buffer, "offset"], -64), "offset must be at least 0"),
    (_set([_first_buffer, "size"], "72"), "size must be an int"),
    (_set([_first_buffer, "value"], "ghost"), "unexpected for \\['ghost'\\]"),
    (_set([_first_buffer, "alias_of"], "ghost"), "a data input is never an alias"),
    (_set(["memory_plan", "buffers", 1, "alias_of"], "ghost"), "not a root buffer"),
    (_set([_first_buffer, "extra"], 1), "unknown field"),
    (_set(["memory_plan", "written_over"], {"10": "lin.bias"}), "cannot be written over"),
    (_set(["version"], True), "version True is not supported"),
    (_set(["backend"], ["cpu"]), "backend must be a string"),
]


@pytest.mark.parametrize("case", range(len(FIELD_EDITS)))
def test_bad_fields_are_named(saved, tmp_path, case):
    edit, message = FIELD_EDITS[case]
    with pytest.raises(GraphcError, match=message):
        load_plan(edited(saved, tmp_path, edit))


def test_arrays_must_match_their_inputs_exactly(saved, tmp_path):
    import io

    def npz(**arrays) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    w = np.zeros((4, 6), np.float32)
    b = np.zeros(4, np.float32)
    cases = [
        (npz(**{"lin.weight": w.astype(np.float64), "lin.bias": b}), "holds float64"),
        (npz(**{"lin.weight": w.astype(">f4"), "lin.bias": b}), "holds >f4"),
        (npz(**{"lin.weight": w.T.copy(), "lin.bias": b}), r"holds float32\[6, 4\]"),
        (
            npz(**{"lin.weight": np.array([w], dtype=object), "lin.bias": b}),
            "dtype object is not a numeric dtype",
        ),
        (npz(**{"lin.weight": w}), "lacks the value of %lin.bias"),
        (npz(**{"lin.weight": w, "lin.bias": b, "extra": b}), "unexpected member"),
        (npz(**{"lin.weight": w, "lin.bias": b})[:-40], "corrupted arrays.npz|truncated"),
    ]
    for blob, message in cases:
        with pytest.raises(GraphcError, match=message):
            load_plan(rewrite(saved[0], tmp_path / "a.gcp", arrays=blob))
    plan = load_plan(rewrite(saved[0], tmp_path / "ok.gcp", arrays=npz(**{"lin.weight": w, "lin.bias": b})))
    np.testing.assert_allclose(plan(saved[1]), np.full((3, 4), 0.25, np.float32))


def test_shapes_whose_element_count_overflows():
    g = parse_graph("graph g(%x: f32[0,4]) {\n  %y = reshape(%x) {shape=(4, 0)} : f32[4,0]\n  return %y\n}")
    data = graph_to_json(g)
    # 2**64 elements: 0 in int64 arithmetic, as many as the empty input's
    data["nodes"][0]["attrs"]["shape"] = [2**32, 2**32]
    with pytest.raises(GraphcError, match="reshape: attribute 'shape' has more than"):
        graph_from_json(data)
    data["nodes"][0]["outputs"][0]["shape"] = [2**32, 2**32]
    with pytest.raises(GraphcError, match=r"nodes\[0\].outputs\[0\].shape has more than"):
        graph_from_json(data)
    text = "graph g(%x: f32[0,4]) {\n  %y = reshape(%x) {shape=(65536, 65536, 65536, 1)} : f32[0]\n}"
    with pytest.raises(GraphcError, match="has more than"):
        parse_graph(text)
    with pytest.raises(GraphcError, match="has more than"):
        g.add_node("broadcast_to", [g.inputs[0]], {"shape": (2**21, 2**21, 4)})
    with pytest.raises(GraphcError, match="has more than"):
        g.add_node("rng_uniform", [g.inputs[0]], {"shape": (2**21, 2**21)})


def test_const_values_fit_their_dtype():
    g = parse_graph("graph g(%x: i32[2]) {\n  %y = neg(%x) : i32[2]\n  return %y\n}")
    for value, dtype in [(2**40, "i32"), (float("nan"), "i64"), (float("inf"), "i32"), (2**63, "i64")]:
        with pytest.raises(GraphcError, match="const: value"):
            g.add_node("const", [], {"value": value, "dtype": dtype})
    for value, dtype in [
        (float("nan"), "f32"),
        (-float("inf"), "f64"),
        (2**63, "f32"),
        (True, "i32"),
        (-5, "i64"),
    ]:
        g.add_node("const", [], {"value": value, "dtype": dtype})


# ------------------------------------------------------------------ the command line
def test_graphc_run_reports_bad_inputs_and_outputs(saved, tmp_path, capsys):
    path, x, y = saved
    good = tmp_path / "x.npy"
    np.save(good, x)
    truncated = tmp_path / "t.npy"
    truncated.write_bytes(good.read_bytes()[:-10])
    archive = tmp_path / "z.npy"
    with open(archive, "wb") as f:
        np.savez(f, x=x)
    cases = [
        (["--input", f"x={tmp_path / 'missing.npy'}"], "no such file"),
        (["--input", f"x={truncated}"], "not a readable .npy file"),
        (["--input", f"x={archive}"], "npz archive"),
        (["--input", f"x={good}", "-o", str(tmp_path / "no" / "such" / "out.npz")], "does not exist"),
    ]
    for args, message in cases:
        assert cli_main(["run", str(path), *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("graphc: error:") and message in err, err
    out = tmp_path / "out.npz"
    assert cli_main(["run", str(path), "--input", f"x={good}", "-o", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out)["output0"], y)


def test_memory_plan_round_trip_keeps_every_field(saved):
    meta = read_meta(saved[0])
    plan = MemoryPlan.from_json(meta["memory_plan"])
    assert plan.to_json() == meta["memory_plan"]
