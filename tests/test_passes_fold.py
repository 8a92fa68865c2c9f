"""constant_fold, freeze and the matmul scale/shift folding (Conv2d + BatchNorm2d becomes one conv)."""

import numpy as np
from graph_testing import (
    assert_same_outputs,
    check_rewrite,
    cnn_graph,
    conv_bn_graph,
    make_feeds,
    mlp_graph,
    parse,
)

from graphc import passes
from graphc.ir import verify
from graphc.passes import constant_fold, dce, fold_matmul_affine, freeze, simplify


def test_fold_makes_const_inputs_and_scalar_const_nodes():
    check_rewrite(
        lambda g: dce(constant_fold(g)),
        """
        graph g(%x: f32[2,2], %a: f32[2] const = [1.0, 2.0], %b: f32[2] const = [3.0, 4.0]) {
          %two = const() {value=2.0, dtype='f32'} : f32[]
          %s = add(%a, %b) : f32[2]
          %t = mul(%s, %two) : f32[2]
          %total = sum(%t) {axes=(0,), keepdims=False} : f32[]
          %y = mul(%x, %t) : f32[2,2]
          %z = add(%y, %total) : f32[2,2]
          return %z
        }
        """,
        """
        graph g(%x: f32[2,2], %t: f32[2] const = [8.0, 12.0]) {
          %total = const() {value=20.0, dtype='f32'} : f32[]
          %y = mul(%x, %t) : f32[2,2]
          %z = add(%y, %total) : f32[2,2]
          return %z
        }
        """,
    )


def test_fold_leaves_params_data_and_huge_broadcasts():
    check_rewrite(
        lambda g: dce(constant_fold(g, max_elements=8)),
        """
        graph g(%x: f32[4,4], %p: f32[4] param = [1.0, 2.0, 3.0, 4.0]) {
          %zero = const() {value=0.0, dtype='f32'} : f32[]
          %big = broadcast_to(%zero) {shape=(4, 4)} : f32[4,4]
          %small = broadcast_to(%zero) {shape=(2,)} : f32[2]
          %y = add(%x, %big) : f32[4,4]
          %q = mul(%p, %zero) : f32[4]
          %z = add(%y, %q) : f32[4,4]
          return %z, %small
        }
        """,
        """
        graph g(%x: f32[4,4], %p: f32[4] param = [1.0, 2.0, 3.0, 4.0], %small: f32[2] const = [0.0, 0.0]) {
          %zero = const() {value=0.0, dtype='f32'} : f32[]
          %big = broadcast_to(%zero) {shape=(4, 4)} : f32[4,4]
          %y = add(%x, %big) : f32[4,4]
          %q = mul(%p, %zero) : f32[4]
          %z = add(%y, %q) : f32[4,4]
          return %z, %small
        }
        """,
    )


def test_fold_keeps_non_finite_scalars_as_const_inputs():
    text = """
        graph g(%x: f32[2]) {
          %one = const() {value=1.0, dtype='f32'} : f32[]
          %zero = const() {value=0.0, dtype='f32'} : f32[]
          %inf = div(%one, %zero) : f32[]
          %y = minimum(%x, %inf) : f32[2]
          return %y
        }
        """
    g = parse(text)
    out = dce(constant_fold(parse(text)))
    verify(out)
    assert [n.op for n in out.nodes] == ["minimum"]
    assert (
        out.kinds["inf"] == "const"
        and np.isposinf(out.initializers["inf"])
        and out.initializers["inf"].shape == ()
    )
    assert_same_outputs(g, out, make_feeds(g))


def test_freeze_turns_params_into_consts_except_updated_ones():
    g = mlp_graph(batch=2, sizes=(3, 4, 2))
    g.add_input("step", g.inputs[1].type, "param", g.initializers[g.inputs[1].name])
    g.add_output(g.inputs[-1], updates="step")
    frozen = freeze(g.copy())
    kinds = {v.name: frozen.kinds[v.name] for v in frozen.inputs}
    assert kinds["step"] == "param"
    assert all(k == "const" for n, k in kinds.items() if n not in ("x", "step"))


def test_frozen_mlp_folds_weight_transposes():
    g = mlp_graph(batch=4, sizes=(5, 6, 3))
    out = passes.optimize(g, freeze=True, check=True)
    assert "transpose" not in out.op_counts()
    assert_same_outputs(g, out, make_feeds(g), rtol=1e-5)


def test_fold_matmul_affine_left_and_right_constants():
    check_rewrite(
        lambda g: dce(constant_fold(fold_matmul_affine(g))),
        """
        graph g(%x: f32[2,3,4], %w: f32[2,3] const = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
                %b: f32[2,1] const = [[0.5], [1.5]], %s: f32[2,1] const = [[2.0], [3.0]]) {
          %m = matmul(%w, %x) : f32[2,2,4]
          %y = add(%m, %b) : f32[2,2,4]
          %z = mul(%y, %s) : f32[2,2,4]
          %neg = neg(%z) : f32[2,2,4]
          return %neg
        }
        """,
        """
        graph g(%x: f32[2,3,4], %w_folded: f32[2,3] const = [[-2.0, -4.0, -6.0], [-12.0, -15.0, -18.0]],
                %z_shift: f32[2,1] const = [[-1.0], [-4.5]]) {
          %m = matmul(%w_folded, %x) : f32[2,2,4]
          %y = add(%m, %z_shift) : f32[2,2,4]
          return %y
        }
        """.replace("%z_shift", "%m_shift"),
    )
    check_rewrite(
        lambda g: dce(constant_fold(fold_matmul_affine(g))),
        """
        graph g(%x: f32[3,2], %w: f32[2,2] const = [[1.0, 2.0], [3.0, 4.0]], %s: f32[2] const = [2.0, 0.5],
                %t: f32[3,1] const = [[1.0], [2.0], [3.0]]) {
          %m = matmul(%x, %w) : f32[3,2]
          %y = sub(%m, %t) : f32[3,2]
          %z = div(%y, %s) : f32[3,2]
          return %z
        }
        """,
        """
        graph g(%x: f32[3,2], %w_folded: f32[2,2] const = [[0.5, 4.0], [1.5, 8.0]],
                %m_shift: f32[3,2] const = [[-0.5, -2.0], [-1.0, -4.0], [-1.5, -6.0]]) {
          %m = matmul(%x, %w_folded) : f32[3,2]
          %y = add(%m, %m_shift) : f32[3,2]
          return %y
        }
        """,
    )


def test_fold_matmul_affine_stops_at_scales_along_the_wrong_axis():
    text = """
        graph g(%x: f32[3,2], %w: f32[2,2] const = [[1.0, 2.0], [3.0, 4.0]],
                %s: f32[3,1] const = [[1.0], [2.0], [3.0]]) {
          %m = matmul(%x, %w) : f32[3,2]
          %z = mul(%m, %s) : f32[3,2]
          return %z
        }
        """
    check_rewrite(fold_matmul_affine, text, text)


def _counts(graph):
    return graph.op_counts()


FUSING = ("fusion", "attention", "dce_2")


def test_frozen_conv_batchnorm_is_one_convolution():
    g = conv_bn_graph(n=2, c_in=3, size=6, c_out=5)
    unfused = [p for p in passes.default_pipeline(freeze=True) if passes.manager.pass_name(p) not in FUSING]
    frozen = passes.optimize(g, freeze=True, passes=unfused, check=True)
    counts = _counts(frozen)
    arithmetic = {
        op: k for op, k in counts.items() if op not in ("im2col", "reshape", "matmul", "maximum", "const")
    }
    assert counts["matmul"] == 1
    assert arithmetic == {"add": 1}, counts
    feeds = make_feeds(g)
    assert_same_outputs(g, frozen, feeds, rtol=1e-4, atol=1e-5)
    fused = passes.optimize(g, freeze=True, check=True)
    assert passes.kernel_count(fused) == 2  # im2col + matmul with its bias/ReLU epilogue
    assert_same_outputs(g, fused, feeds, rtol=1e-4, atol=1e-5)


def test_unfrozen_conv_batchnorm_keeps_params_and_meaning():
    g = conv_bn_graph()
    out = passes.optimize(g, check=True)
    assert {v.name for v in out.inputs_of_kind("param")} == {v.name for v in g.inputs_of_kind("param")}
    assert passes.kernel_count(out) == 2  # BN's per-channel ops sink into the conv's matmul epilogue
    assert_same_outputs(g, out, make_feeds(g), rtol=1e-5)


def test_frozen_cnn_matches_unfrozen():
    g = cnn_graph(batch=2, size=8)
    out = passes.optimize(g, freeze=True, check=True)
    assert not out.inputs_of_kind("param")
    assert_same_outputs(g, out, make_feeds(g), rtol=1e-4, atol=1e-5)
    assert np.isfinite(passes.kernel_count(out))


def test_simplify_then_fold_reaches_a_fixed_point():
    g = conv_bn_graph()
    once = passes.optimize(g, freeze=True)
    twice = passes.optimize(once, passes=["constant_fold", "simplify", "cse", "dce"])
    assert len(twice.nodes) == len(once.nodes)
    assert simplify  # imported for the pipeline above
