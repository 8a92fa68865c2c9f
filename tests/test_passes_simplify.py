"""simplify: one text-in / text-out test per rule, each also checked with the reference executor."""

import pytest
from graph_testing import check_rewrite, parse

from graphc.passes import configured, dce, simplify


def run(g):
    return dce(simplify(g))


ONE = "%one = const() {value=1.0, dtype='f32'} : f32[]"
ZERO = "%zero = const() {value=0.0, dtype='f32'} : f32[]"


@pytest.mark.parametrize(
    "expr",
    [
        "add(%x, %zero)",
        "add(%zero, %x)",
        "sub(%x, %zero)",
        "mul(%x, %one)",
        "mul(%one, %x)",
        "div(%x, %one)",
        "pow(%x, %one)",
        "add(%x, %zeros)",
        "mul(%x, %ones)",
    ],
)
def test_identity_arithmetic(expr):
    check_rewrite(
        run,
        f"""
        graph g(%x: f32[2,3], %zeros: f32[3] const = [0.0, 0.0, 0.0],
                %ones: f32[3] const = [1.0, 1.0, 1.0]) {{
          {ONE}
          {ZERO}
          %y = {expr} : f32[2,3]
          %z = exp(%y) : f32[2,3]
          return %z
        }}
        """,
        """
        graph g(%x: f32[2,3]) {
          %z = exp(%x) : f32[2,3]
          return %z
        }
        """,
    )


def test_identity_that_broadcasts_is_kept():
    text = f"""
        graph g(%x: f32[3]) {{
          %ones = const() {{value=1.0, dtype='f32'}} : f32[]
          %big = broadcast_to(%ones) {{shape=(2, 3)}} : f32[2,3]
          %y = mul(%x, %big) : f32[2,3]
          {ZERO}
          return %y
        }}
        """
    # broadcast_to feeds a broadcasting mul: the scalar is read directly, and x * 1 would
    # change the type, so the mul stays.
    check_rewrite(
        run,
        text,
        """
        graph g(%x: f32[3]) {
          %ones = const() {value=1.0, dtype='f32'} : f32[]
          %big = broadcast_to(%ones) {shape=(2, 3)} : f32[2,3]
          %y = mul(%x, %big) : f32[2,3]
          return %y
        }
        """,
    )


def test_mul_by_zero_only_for_integers_or_unsafe_math():
    int_graph = """
        graph g(%x: i32[2,3]) {
          %zero = const() {value=0, dtype='i32'} : i32[]
          %y = mul(%x, %zero) : i32[2,3]
          return %y
        }
        """
    check_rewrite(
        run,
        int_graph,
        """
        graph g(%x: i32[2,3]) {
          %z = const() {value=0, dtype='i32'} : i32[]
          %y = broadcast_to(%z) {shape=(2, 3)} : i32[2,3]
          return %y
        }
        """,
    )
    float_graph = f"""
        graph g(%x: f32[2,3]) {{
          {ZERO}
          %y = mul(%x, %zero) : f32[2,3]
          return %y
        }}
        """
    check_rewrite(run, float_graph, float_graph)  # x may be inf or nan
    check_rewrite(
        lambda g: dce(configured(simplify, unsafe_math=True)(g)),
        float_graph,
        """
        graph g(%x: f32[2,3]) {
          %z = const() {value=0.0, dtype='f32'} : f32[]
          %y = broadcast_to(%z) {shape=(2, 3)} : f32[2,3]
          return %y
        }
        """,
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("%a = neg(%x) : f32[4]\n %y = neg(%a) : f32[4]", "%y = exp(%x) : f32[4]"),
        (
            "%m = const() {value=-1.0, dtype='f32'} : f32[]\n %y = mul(%x, %m) : f32[4]",
            "%a = neg(%x) : f32[4]\n %y = exp(%a) : f32[4]",
        ),
        (
            "%a = neg(%w) : f32[4]\n %y = add(%x, %a) : f32[4]",
            "%a = sub(%x, %w) : f32[4]\n %y = exp(%a) : f32[4]",
        ),
        (
            "%a = neg(%w) : f32[4]\n %y = sub(%x, %a) : f32[4]",
            "%a = add(%x, %w) : f32[4]\n %y = exp(%a) : f32[4]",
        ),
        (
            "%two = const() {value=2.0, dtype='f32'} : f32[]\n %y = pow(%x, %two) : f32[4]",
            "%a = mul(%x, %x) : f32[4]\n %y = exp(%a) : f32[4]",
        ),
        (
            "%m = const() {value=-1.0, dtype='f32'} : f32[]\n %y = pow(%x, %m) : f32[4]",
            "%a = reciprocal(%x) : f32[4]\n %y = exp(%a) : f32[4]",
        ),
        (
            "%one = const() {value=1.0, dtype='f32'} : f32[]\n %y = div(%one, %x) : f32[4]",
            "%a = reciprocal(%x) : f32[4]\n %y = exp(%a) : f32[4]",
        ),
        (
            "%one = const() {value=1.0, dtype='f32'} : f32[]\n"
            " %s = sqrt(%x) : f32[4]\n %y = div(%one, %s) : f32[4]",
            "%a = rsqrt(%x) : f32[4]\n %y = exp(%a) : f32[4]",
        ),
        (
            "%s = sqrt(%x) : f32[4]\n %y = reciprocal(%s) : f32[4]",
            "%a = rsqrt(%x) : f32[4]\n %y = exp(%a) : f32[4]",
        ),
        (
            "%d = const() {value=8.0, dtype='f32'} : f32[]\n %y = div(%x, %d) : f32[4]",
            "%c = const() {value=0.125, dtype='f32'} : f32[]\n"
            " %a = mul(%x, %c) : f32[4]\n %y = exp(%a) : f32[4]",
        ),
        (
            "%a = abs(%x) : f32[4]\n %y = abs(%a) : f32[4]",
            "%a = abs(%x) : f32[4]\n %y = exp(%a) : f32[4]",
        ),
        (
            "%a = neg(%x) : f32[4]\n %y = abs(%a) : f32[4]",
            "%a = abs(%x) : f32[4]\n %y = exp(%a) : f32[4]",
        ),
        ("%y = maximum(%x, %x) : f32[4]", "%y = exp(%x) : f32[4]"),
        ("%y = minimum(%x, %x) : f32[4]", "%y = exp(%x) : f32[4]"),
        ("%c = gt(%x, %w) : bool[4]\n %y = where(%c, %x, %x) : f32[4]", "%y = exp(%x) : f32[4]"),
        ("%y = cast(%x) {dtype='f32'} : f32[4]", "%y = exp(%x) : f32[4]"),
    ],
)
def test_algebra_rules(body, expected):
    """Each case computes %y from %x (and %w); the graph returns exp(%y)."""
    before = f"graph g(%x: f32[4], %w: f32[4]) {{\n {body}\n %out = exp(%y) : f32[4]\n return %out\n}}"
    after = f"graph g(%x: f32[4], %w: f32[4]) {{\n {expected}\n return %y\n}}"
    check_rewrite(run, before, after)


def test_div_by_a_non_power_of_two_is_kept():
    text = """
        graph g(%x: f32[4]) {
          %d = const() {value=3.0, dtype='f32'} : f32[]
          %y = div(%x, %d) : f32[4]
          return %y
        }
        """
    check_rewrite(run, text, text)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("%y = reshape(%x) {shape=(2, 3, 4)} : f32[2,3,4]", "%y = neg(%x) : f32[2,3,4]"),
        (
            "%a = reshape(%x) {shape=(6, 4)} : f32[6,4]\n %y = reshape(%a) {shape=(2, 3, 4)} : f32[2,3,4]",
            "%y = neg(%x) : f32[2,3,4]",
        ),
        (
            "%a = reshape(%x) {shape=(6, 4)} : f32[6,4]\n %y = reshape(%a) {shape=(3, 2, 4)} : f32[3,2,4]",
            # the reshape also sinks below neg
            "%a = neg(%x) : f32[2,3,4]\n %y = reshape(%a) {shape=(3, 2, 4)} : f32[3,2,4]",
        ),
        ("%y = transpose(%x) {perm=(0, 1, 2)} : f32[2,3,4]", "%y = neg(%x) : f32[2,3,4]"),
        (
            "%a = transpose(%x) {perm=(1, 0, 2)} : f32[3,2,4]\n"
            " %y = transpose(%a) {perm=(1, 0, 2)} : f32[2,3,4]",
            "%y = neg(%x) : f32[2,3,4]",
        ),
        (
            "%a = transpose(%x) {perm=(1, 2, 0)} : f32[3,4,2]\n"
            " %y = transpose(%a) {perm=(1, 0, 2)} : f32[4,3,2]",
            "%a = transpose(%x) {perm=(2, 1, 0)} : f32[4,3,2]\n %y = neg(%a) : f32[4,3,2]",
        ),
        ("%y = broadcast_to(%x) {shape=(2, 3, 4)} : f32[2,3,4]", "%y = neg(%x) : f32[2,3,4]"),
        (
            "%a = broadcast_to(%x) {shape=(1, 2, 3, 4)} : f32[1,2,3,4]\n"
            " %y = broadcast_to(%a) {shape=(5, 2, 3, 4)} : f32[5,2,3,4]",
            "%a = broadcast_to(%x) {shape=(5, 2, 3, 4)} : f32[5,2,3,4]\n %y = neg(%a) : f32[5,2,3,4]",
        ),
        (
            "%y = slice(%x) {starts=(0, 0, 0), stops=(2, 3, 4), steps=(1, 1, 1)} : f32[2,3,4]",
            "%y = neg(%x) : f32[2,3,4]",
        ),
        ("%y = pad(%x) {pads=((0, 0), (0, 0), (0, 0)), value=0.0} : f32[2,3,4]", "%y = neg(%x) : f32[2,3,4]"),
        ("%y = concat(%x) {axis=1} : f32[2,3,4]", "%y = neg(%x) : f32[2,3,4]"),
    ],
)
def test_movement_rules(body, expected):
    """Each case computes %y from %x; the graph returns neg(%y)."""
    out_type = body.rsplit(":", 1)[1].strip()
    before = f"graph g(%x: f32[2,3,4]) {{\n {body}\n %out = neg(%y) : {out_type}\n return %out\n}}"
    after = f"graph g(%x: f32[2,3,4]) {{\n {expected}\n return %y\n}}"
    check_rewrite(run, before, after)


def test_broadcast_to_operand_is_read_directly_when_the_op_broadcasts():
    check_rewrite(
        run,
        """
        graph g(%x: f32[2,3], %b: f32[3]) {
          %half = const() {value=0.5, dtype='f32'} : f32[]
          %hb = broadcast_to(%half) {shape=(2, 3)} : f32[2,3]
          %bb = broadcast_to(%b) {shape=(2, 3)} : f32[2,3]
          %y = mul(%x, %hb) : f32[2,3]
          %z = add(%y, %bb) : f32[2,3]
          return %z
        }
        """,
        """
        graph g(%x: f32[2,3], %b: f32[3]) {
          %half = const() {value=0.5, dtype='f32'} : f32[]
          %y = mul(%x, %half) : f32[2,3]
          %z = add(%y, %b) : f32[2,3]
          return %z
        }
        """,
    )


def test_reshape_sinks_below_pointwise_ops():
    check_rewrite(
        run,
        """
        graph g(%x: f32[2,6], %s: f32[] param = 2.0) {
          %r = reshape(%x) {shape=(2, 3, 2)} : f32[2,3,2]
          %e = exp(%r) : f32[2,3,2]
          %y = mul(%e, %s) : f32[2,3,2]
          return %y
        }
        """,
        """
        graph g(%x: f32[2,6], %s: f32[] param = 2.0) {
          %e = exp(%x) : f32[2,6]
          %y = mul(%e, %s) : f32[2,6]
          %r = reshape(%y) {shape=(2, 3, 2)} : f32[2,3,2]
          return %r
        }
        """,
    )


def test_reshape_sinks_below_per_channel_constants():
    check_rewrite(
        run,
        """
        graph g(%x: f32[2,3,4], %m: f32[1,3,1,1] const = [[[[1.0]], [[2.0]], [[3.0]]]]) {
          %r = reshape(%x) {shape=(2, 3, 2, 2)} : f32[2,3,2,2]
          %y = sub(%r, %m) : f32[2,3,2,2]
          return %y
        }
        """,
        """
        graph g(%x: f32[2,3,4], %m_r: f32[1,3,1] const = [[[1.0], [2.0], [3.0]]]) {
          %y = sub(%x, %m_r) : f32[2,3,4]
          %r = reshape(%y) {shape=(2, 3, 2, 2)} : f32[2,3,2,2]
          return %r
        }
        """,
    )


def test_reshape_stays_when_the_constant_straddles_a_merged_axis():
    text = """
        graph g(%x: f32[2,12], %m: f32[3,1] const = [[1.0], [2.0], [3.0]]) {
          %r = reshape(%x) {shape=(2, 3, 4)} : f32[2,3,4]
          %y = sub(%r, %m) : f32[2,3,4]
          return %y
        }
        """
    check_rewrite(run, text, text)


def test_simplify_is_idempotent_on_its_output():
    text = """
        graph g(%x: f32[4]) {
          %one = const() {value=1.0, dtype='f32'} : f32[]
          %a = mul(%x, %one) : f32[4]
          %b = neg(%a) : f32[4]
          %c = neg(%b) : f32[4]
          return %c
        }
        """
    once = check_rewrite(run, text, "graph g(%x: f32[4]) {\n return %x\n}")
    assert [n.op for n in simplify(once).nodes] == []


def test_reshape_sinks_below_a_binary_op_of_two_alike_reshapes():
    check_rewrite(
        run,
        """
        graph g(%x: f32[2,6], %y: f32[2,6]) {
          %r = reshape(%x) {shape=(3, 4)} : f32[3,4]
          %s = reshape(%y) {shape=(3, 4)} : f32[3,4]
          %z = add(%r, %s) : f32[3,4]
          return %z
        }
        """,
        """
        graph g(%x: f32[2,6], %y: f32[2,6]) {
          %z = add(%x, %y) : f32[2,6]
          %r = reshape(%z) {shape=(3, 4)} : f32[3,4]
          return %r
        }
        """,
    )


def test_reshape_sinks_below_per_channel_parameters():
    check_rewrite(
        run,
        """
        graph g(%x: f32[2,3,4], %p: f32[3] param = [1.0, 2.0, 3.0]) {
          %r = reshape(%x) {shape=(2, 3, 2, 2)} : f32[2,3,2,2]
          %pc = reshape(%p) {shape=(1, 3, 1, 1)} : f32[1,3,1,1]
          %y = mul(%r, %pc) : f32[2,3,2,2]
          return %y
        }
        """,
        """
        graph g(%x: f32[2,3,4], %p: f32[3] param = [1.0, 2.0, 3.0]) {
          %pc = reshape(%p) {shape=(1, 3, 1)} : f32[1,3,1]
          %y = mul(%x, %pc) : f32[2,3,4]
          %r = reshape(%y) {shape=(2, 3, 2, 2)} : f32[2,3,2,2]
          return %r
        }
        """,
    )


def test_transpose_of_a_matmul_becomes_a_matmul_of_transposes():
    # transpose(x^T @ g) is how autodiff makes a Linear weight's gradient: it becomes g^T @ x,
    # whose transpose fusion hands to BLAS as a flag (x's double transpose cancels).
    check_rewrite(
        simplify,
        """graph g(%x: f32[6,4], %gr: f32[6,5]) {
  %xt = transpose(%x) {perm=(1, 0)} : f32[4,6]
  %m = matmul(%xt, %gr) : f32[4,5]
  %w = transpose(%m) {perm=(1, 0)} : f32[5,4]
  return %w
}""",
        """graph g(%x: f32[6,4], %gr: f32[6,5]) {
  %0 = transpose(%gr) {perm=(1, 0)} : f32[5,6]
  %1 = matmul(%0, %x) : f32[5,4]
  return %1
}""",
    )


SPLIT_HEADS = """graph g(%y: f32[2,3,2,4], %w: f32[2,4,3]) {{
  %t = transpose(%y) {{perm=(2, 0, 1, 3)}} : f32[2,2,3,4]
  %q = slice(%t) {{starts=(0, 0, 0, 0), stops=(1, 2, 3, 4), steps=(1, 1, 1, 1)}} : f32[1,2,3,4]
  %k = slice(%t) {{starts=(1, 0, 0, 0), stops=(2, 2, 3, 4), steps=(1, 1, 1, 1)}} : f32[1,2,3,4]
  %qr = reshape(%q) {{shape=(2, 3, 4)}} : f32[2,3,4]
  %kr = reshape(%k) {{shape=(2, 3, 4)}} : f32[2,3,4]
  %a = matmul(%qr, %w) : f32[2,3,3]
  %b = {k_reader} : f32[2,3,3]
  return %a, %b
}}"""


def test_slices_of_a_transpose_move_before_it_when_they_feed_matmuls():
    # attention's head split: each piece becomes transpose(slice y), a strided view of y
    check_rewrite(
        simplify,
        SPLIT_HEADS.format(k_reader="matmul(%kr, %w)"),
        """graph g(%y: f32[2,3,2,4], %w: f32[2,4,3]) {
  %0 = slice(%y) {starts=(0, 0, 0, 0), stops=(2, 3, 1, 4), steps=(1, 1, 1, 1)} : f32[2,3,1,4]
  %1 = transpose(%0) {perm=(2, 0, 1, 3)} : f32[1,2,3,4]
  %2 = slice(%y) {starts=(0, 0, 1, 0), stops=(2, 3, 2, 4), steps=(1, 1, 1, 1)} : f32[2,3,1,4]
  %3 = transpose(%2) {perm=(2, 0, 1, 3)} : f32[1,2,3,4]
  %4 = reshape(%1) {shape=(2, 3, 4)} : f32[2,3,4]
  %5 = reshape(%3) {shape=(2, 3, 4)} : f32[2,3,4]
  %6 = matmul(%4, %w) : f32[2,3,3]
  %7 = matmul(%5, %w) : f32[2,3,3]
  return %6, %7
}""",
    )


def test_slices_of_a_transpose_stay_when_one_feeds_no_matmul():
    # one transpose copy serves both pieces better than a slice and a transpose each
    text = SPLIT_HEADS.format(k_reader="exp(%kr)").replace("f32[2,3,3]\n  return", "f32[2,3,4]\n  return")
    text = text.replace("%b = exp(%kr) : f32[2,3,3]", "%b = exp(%kr) : f32[2,3,4]")
    out = simplify(parse(text))
    assert [n.op for n in out.nodes].count("transpose") == 1


def test_relu_after_a_conv_reshape_joins_the_matmul_epilogue():
    # where(gt(reshape z, 0), reshape z, 0): the reshape has two readers and still sinks, so the
    # ReLU lands next to the matmul that made z.
    from graphc import passes
    from graphc.ir import Graph, TensorType

    g = Graph("conv_relu")
    w = g.add_input("w", TensorType((4, 6)), "param")
    cols = g.add_input("cols", TensorType((2, 6, 9)))
    z = g.op("matmul", w, cols)
    r = g.op("reshape", z, shape=(2, 4, 3, 3))
    zero = g.op("const", value=0.0, dtype="f32")
    g.add_output(g.op("where", g.op("gt", r, zero), r, zero))
    fused = passes.optimize(g)
    kinds = [n.attrs.get("kind") for n in fused.nodes if n.op == "fused"]
    assert kinds == ["matmul"], [n.op for n in fused.nodes]
