"""The pattern-rewrite engine (passes/rewrite.py): matching, binding, ordering, structural hashing."""

from graph_testing import check_rewrite, parse

from graphc.passes import dce
from graphc.passes.rewrite import Pat, PatternMatcher, graph_rewrite

x, y = Pat.var("x"), Pat.var("y")

HEAD = "graph g(%a: f32[4], %b: f32[4]) {"
ZERO = "%zero = const() {value=0.0, dtype='f32'} : f32[]"


def rewrite_with(*rules):
    matcher = PatternMatcher(list(rules))

    def run(g):
        graph_rewrite(g, matcher)
        return dce(g)

    return run


def test_commutative_pattern_matches_either_order():
    run = rewrite_with((Pat.op("add", x, Pat.cst(0), commutative=True), lambda rw, node, x: x))
    for expr in ("add(%a, %zero)", "add(%zero, %a)"):
        check_rewrite(
            run,
            f"{HEAD}\n {ZERO}\n %y = {expr} : f32[4]\n %z = exp(%y) : f32[4]\n return %z\n}}",
            f"{HEAD}\n %z = exp(%a) : f32[4]\n return %z\n}}",
        )


def test_a_non_commutative_pattern_keeps_operand_order():
    run = rewrite_with((Pat.op("sub", Pat.cst(0), x), lambda rw, node, x: rw.emit("neg", [x])))
    text = f"{HEAD}\n {ZERO}\n %y = sub(%a, %zero) : f32[4]\n return %y\n}}"
    check_rewrite(run, text, text)  # x - 0 is not 0 - x: no match
    check_rewrite(
        run,
        f"{HEAD}\n {ZERO}\n %y = sub(%zero, %a) : f32[4]\n return %y\n}}",
        f"{HEAD}\n %y = neg(%a) : f32[4]\n return %y\n}}",
    )


def test_a_name_bound_twice_needs_the_same_value():
    run = rewrite_with((Pat.op("maximum", x, x), lambda rw, node, x: x))
    same = f"{HEAD}\n %y = maximum(%a, %a) : f32[4]\n %z = exp(%y) : f32[4]\n return %z\n}}"
    check_rewrite(run, same, f"{HEAD}\n %z = exp(%a) : f32[4]\n return %z\n}}")
    differ = f"{HEAD}\n %y = maximum(%a, %b) : f32[4]\n return %y\n}}"
    check_rewrite(run, differ, differ)


def test_a_rule_returning_none_lets_the_next_match_and_rule_try():
    tried = []

    def refuse(rw, node, x, y):
        tried.append(x.name)
        return None

    run = rewrite_with(
        (Pat.op("mul", x, Pat.op("neg", y), commutative=True), refuse),
        (Pat.op("mul", Pat.op("neg", x), Pat.op("neg", y)), lambda rw, node, x, y: rw.emit("mul", [x, y])),
    )
    check_rewrite(
        run,
        f"{HEAD}\n %n = neg(%b) : f32[4]\n %m = neg(%a) : f32[4]\n %y = mul(%m, %n) : f32[4]\n"
        " %z = add(%y, %y) : f32[4]\n return %y\n}",
        f"{HEAD}\n %0 = mul(%a, %b) : f32[4]\n return %0\n}}",
    )
    assert len(tried) == 2  # both operand orders reached the first rule


def test_predicates_and_nested_patterns():
    def big(rw, v):
        return v.shape[0] > 2

    run = rewrite_with((Pat.op("exp", Pat.op("log", Pat.var("x", where=big))), lambda rw, node, x: x))
    check_rewrite(
        run,
        f"{HEAD}\n %l = log(%a) : f32[4]\n %e = exp(%l) : f32[4]\n return %e\n}}",
        f"{HEAD}\n return %a\n}}",
        rtol=1e-4,
    )
    small = "graph g(%a: f32[2]) {\n %l = log(%a) : f32[2]\n %e = exp(%l) : f32[2]\n return %e\n}"
    check_rewrite(run, small, small)


def test_rules_apply_to_a_fixed_point():
    run = rewrite_with((Pat.op("neg", Pat.op("neg", x)), lambda rw, node, x: x))
    chain = "".join(f" %n{i} = neg(%n{i - 1}) : f32[4]\n" for i in range(1, 8))
    check_rewrite(
        run,
        f"{HEAD}\n %n0 = neg(%a) : f32[4]\n{chain} return %n7\n}}",
        f"{HEAD}\n return %a\n}}",
    )


def test_structural_hashing_merges_equal_nodes():
    g = parse(
        f"{HEAD}\n %p = exp(%a) : f32[4]\n %q = exp(%a) : f32[4]\n %r = add(%p, %q) : f32[4]\n return %r\n}}"
    )
    assert graph_rewrite(g, PatternMatcher([]))
    assert [n.op for n in g.nodes] == ["exp", "add"]
    assert g.nodes[1].inputs[0] is g.nodes[1].inputs[1]


def test_emit_reuses_an_equal_node_already_placed():
    run = rewrite_with((Pat.op("sub", Pat.cst(0), x), lambda rw, node, x: rw.emit("neg", [x])))
    check_rewrite(
        run,
        f"{HEAD}\n {ZERO}\n %p = neg(%a) : f32[4]\n %q = sub(%zero, %a) : f32[4]\n"
        " %r = add(%p, %q) : f32[4]\n return %r\n}",
        f"{HEAD}\n %p = neg(%a) : f32[4]\n %r = add(%p, %p) : f32[4]\n return %r\n}}",
    )


def test_negative_zero_constants_do_not_merge_with_zero():
    g = parse(
        f"{HEAD}\n %z = const() {{value=0.0, dtype='f32'}} : f32[]\n"
        " %m = const() {value=-0.0, dtype='f32'} : f32[]\n"
        " %p = mul(%a, %z) : f32[4]\n %q = mul(%a, %m) : f32[4]\n %r = add(%p, %q) : f32[4]\n return %r\n}"
    )
    graph_rewrite(g, PatternMatcher([]))
    assert [n.op for n in g.nodes].count("const") == 2
