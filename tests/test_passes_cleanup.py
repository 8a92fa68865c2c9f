"""dce and cse, text in / text out, checked with the reference executor."""

from graph_testing import check_rewrite

from graphc.passes import cse, dce


def test_dce_drops_unused_nodes_and_non_data_inputs():
    check_rewrite(
        dce,
        """
        graph g(%x: f32[3], %unused_x: f32[3], %w: f32[3] param = [1.0, 2.0, 3.0],
                %c: f32[3] const = [4.0, 5.0, 6.0], %s: f32[3] state = [0.0, 0.0, 0.0]) {
          %a = exp(%x) : f32[3]
          %b = mul(%a, %w) : f32[3]
          %d = add(%a, %c) : f32[3]
          %e = neg(%d) : f32[3]
          return %b
        }
        """,
        """
        graph g(%x: f32[3], %unused_x: f32[3], %w: f32[3] param = [1.0, 2.0, 3.0]) {
          %a = exp(%x) : f32[3]
          %b = mul(%a, %w) : f32[3]
          return %b
        }
        """,
    )


def test_dce_keeps_update_targets():
    check_rewrite(
        dce,
        """
        graph g(%x: f32[2], %s: f32[2] state = [0.0, 0.0], %p: f32[2] param = [1.0, 1.0]) {
          %y = exp(%x) : f32[2]
          %junk = neg(%y) : f32[2]
          return %y, %y -> %s
        }
        """,
        """
        graph g(%x: f32[2], %s: f32[2] state = [0.0, 0.0]) {
          %y = exp(%x) : f32[2]
          return %y, %y -> %s
        }
        """,
    )


def test_cse_merges_equal_nodes_and_commutative_operands():
    check_rewrite(
        lambda g: dce(cse(g)),
        """
        graph g(%x: f32[2,3], %y: f32[3]) {
          %a = add(%x, %y) : f32[2,3]
          %b = add(%y, %x) : f32[2,3]
          %c = sub(%x, %y) : f32[2,3]
          %d = sub(%y, %x) : f32[2,3]
          %e = mul(%a, %b) : f32[2,3]
          %f = mul(%c, %d) : f32[2,3]
          %g = add(%e, %f) : f32[2,3]
          return %g
        }
        """,
        """
        graph g(%x: f32[2,3], %y: f32[3]) {
          %a = add(%x, %y) : f32[2,3]
          %c = sub(%x, %y) : f32[2,3]
          %d = sub(%y, %x) : f32[2,3]
          %e = mul(%a, %a) : f32[2,3]
          %f = mul(%c, %d) : f32[2,3]
          %g = add(%e, %f) : f32[2,3]
          return %g
        }
        """,
    )


def test_cse_compares_attributes_exactly():
    check_rewrite(
        lambda g: dce(cse(g)),
        """
        graph g(%x: f32[2,3]) {
          %z = const() {value=0.0, dtype='f32'} : f32[]
          %nz = const() {value=-0.0, dtype='f32'} : f32[]
          %z2 = const() {value=0.0, dtype='f32'} : f32[]
          %s1 = sum(%x) {axes=(1,), keepdims=True} : f32[2,1]
          %s2 = sum(%x) {axes=(1,), keepdims=True} : f32[2,1]
          %s3 = sum(%x) {axes=(1,), keepdims=False} : f32[2]
          %a = div(%s1, %z) : f32[2,1]
          %b = div(%s2, %nz) : f32[2,1]
          %c = div(%s2, %z2) : f32[2,1]
          return %a, %b, %c, %s3
        }
        """,
        """
        graph g(%x: f32[2,3]) {
          %z = const() {value=0.0, dtype='f32'} : f32[]
          %nz = const() {value=-0.0, dtype='f32'} : f32[]
          %s1 = sum(%x) {axes=(1,), keepdims=True} : f32[2,1]
          %s3 = sum(%x) {axes=(1,), keepdims=False} : f32[2]
          %a = div(%s1, %z) : f32[2,1]
          %b = div(%s1, %nz) : f32[2,1]
          return %a, %b, %a, %s3
        }
        """,
    )


def test_cse_never_merges_rng_with_different_seeds_but_merges_equal_draws():
    check_rewrite(
        lambda g: dce(cse(g)),
        """
        graph g(%off: i64[] state = 3) {
          %a = rng_uniform(%off) {shape=(4,), seed=1, dtype='f32'} : f32[4]
          %b = rng_uniform(%off) {shape=(4,), seed=2, dtype='f32'} : f32[4]
          %c = rng_uniform(%off) {shape=(4,), seed=1, dtype='f32'} : f32[4]
          %d = add(%a, %b) : f32[4]
          %e = add(%d, %c) : f32[4]
          return %e
        }
        """,
        """
        graph g(%off: i64[] state = 3) {
          %a = rng_uniform(%off) {shape=(4,), seed=1, dtype='f32'} : f32[4]
          %b = rng_uniform(%off) {shape=(4,), seed=2, dtype='f32'} : f32[4]
          %d = add(%a, %b) : f32[4]
          %e = add(%d, %a) : f32[4]
          return %e
        }
        """,
    )


def test_cse_merges_equal_constant_inputs():
    check_rewrite(
        lambda g: dce(cse(g)),
        """
        graph g(%x: f32[2], %c1: f32[2] const = [1.5, 2.5], %c2: f32[2] const = [1.5, 2.5],
                %c3: f32[2] const = [1.5, 3.5]) {
          %a = mul(%x, %c1) : f32[2]
          %b = mul(%x, %c2) : f32[2]
          %c = mul(%x, %c3) : f32[2]
          %d = add(%a, %b) : f32[2]
          %e = add(%d, %c) : f32[2]
          return %e
        }
        """,
        """
        graph g(%x: f32[2], %c1: f32[2] const = [1.5, 2.5], %c3: f32[2] const = [1.5, 3.5]) {
          %a = mul(%x, %c1) : f32[2]
          %c = mul(%x, %c3) : f32[2]
          %d = add(%a, %a) : f32[2]
          %e = add(%d, %c) : f32[2]
          return %e
        }
        """,
    )
