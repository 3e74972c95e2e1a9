import pytest

from workbench.registry import Registry, UnknownNameError


def test_unknown_name_lists_known_names_and_closest():
    reg = Registry("method")
    reg.register("medtrim")(lambda: "m")
    reg.register("clip")(lambda: "c")
    assert reg.create("clip") == "c" and reg.names("m*") == ["medtrim"]
    with pytest.raises(UnknownNameError, match=r"known methods: \['clip', 'medtrim'\]. Did you mean 'medtrim'"):
        reg.get("medtrm")
