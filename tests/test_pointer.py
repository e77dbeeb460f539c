from toolssm.tools import EDGE, ERR, PointerMemory


def test_pointers_start_at_the_first_input_token_and_move_one_token():
    t = PointerMemory(2)
    assert t.reset(list("ab")) == []
    assert t.step("[p1.init]") == []
    assert t.step("[p1.read]") == ["a"]
    assert t.step("[p1.right]") == []
    assert t.step("[p1.read]") == ["b"]
    t.step("[p2.init]")
    assert t.step("[p2.read]") == ["a"]  # pointers are independent


def test_reading_outside_memory_returns_the_boundary_token_and_the_pointer_can_walk_back():
    t = PointerMemory(1)
    t.reset(["x"])
    t.step("[p1.init]")
    t.step("[p1.left]")
    assert t.step("[p1.read]") == [EDGE]
    t.step("[p1.right]")
    t.step("[p1.right]")
    assert t.step("[p1.read]") == [EDGE]
    t.record("y")  # a generated thought extends memory under the pointer
    assert t.step("[p1.read]") == ["y"]
    t.step("[p1.left]")
    assert t.step("[p1.read]") == ["x"]


def test_invalid_commands_return_an_error_observation():
    t = PointerMemory(2)
    t.reset(["x"])
    assert t.step("[p1.read]") == [ERR]  # never created
    assert t.step("[p2.left]") == [ERR]
    assert t.step("[p3.read]") == [ERR]  # no such pointer
    assert t.step("hello") == [ERR]
    assert not t.accepts("hello") and not t.accepts("[p3.read]") and t.accepts("[p2.read]")
    t.step("[p1.init]")
    assert t.step("[p1.read]") == ["x"]  # still works after errors


def test_reset_clears_memory_and_pointers():
    t = PointerMemory(1)
    t.reset(["x"])
    t.step("[p1.init]")
    t.record("z")
    t.reset(["q"])
    assert t.memory == ["q"]
    assert t.step("[p1.read]") == [ERR]
