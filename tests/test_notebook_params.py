import pytest

from agreid_kit.notebook import NotebookParameterError, ParameterGuard


def _run(injected: dict):
    ns: dict = {"__name__": "__main__"}
    guard = ParameterGuard(ns)
    ns["guard"] = guard
    ns.update(dataset="synthag", epochs=2, lr=0.1, taus=[1, 5], flag=False, root=None)
    guard.freeze(ns)
    ns.update(injected)
    return guard.validate(ns)


def test_defaults_and_valid_overrides_pass():
    assert _run({})["epochs"] == 2
    p = _run({"epochs": 5, "lr": 1, "root": "/data", "taus": [2]})
    assert p == {"dataset": "synthag", "epochs": 5, "lr": 1, "taus": [2], "flag": False, "root": "/data"}


def test_unknown_parameter_lists_valid_ones_and_suggests():
    with pytest.raises(NotebookParameterError) as e:
        _run({"epoch": 3})
    msg = str(e.value)
    assert "'epoch'" in msg and "did you mean 'epochs'" in msg and "dataset" in msg and "taus" in msg


@pytest.mark.parametrize("bad", [{"epochs": "3"}, {"flag": 1}, {"epochs": 2.5}, {"taus": 5}])
def test_wrong_type_is_an_error(bad):
    with pytest.raises(NotebookParameterError) as e:
        _run(bad)
    assert next(iter(bad)) in str(e.value)
