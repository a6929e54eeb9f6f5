"""The optimizer classes accept what users type: both reflection keywords, and a clear TypeError otherwise."""

import dspy
import pytest

from optimization import DSPyGepaOptimizer, GepaOptimizer, HumanFeedbackOptimizer, PromptOptimizer


def test_dspy_optimizer_takes_dspys_reflection_lm_and_its_own_reflection_model() -> None:
    lm = dspy.LM("openai/reflector", cache=False)
    assert DSPyGepaOptimizer(auto="light", reflection_lm=lm).reflection_model is lm
    assert (
        DSPyGepaOptimizer(auto="light", reflection_model="openai/reflector").reflection_model
        == "openai/reflector"
    )
    with pytest.raises(TypeError, match="both reflection_model= and reflection_lm="):
        DSPyGepaOptimizer(reflection_model=lm, reflection_lm=lm)


def test_dspy_optimizer_names_an_unknown_or_owned_keyword() -> None:
    with pytest.raises(
        TypeError, match=r"unexpected keyword argument 'reflection_minibatch'.*reflection_minibatch_size"
    ):
        DSPyGepaOptimizer(auto="light", reflection_minibatch=3)
    with pytest.raises(TypeError, match="'log_dir', which gepa-stream sets itself: use run_dir="):
        DSPyGepaOptimizer(log_dir="/tmp/x")
    assert DSPyGepaOptimizer(reflection_minibatch_size=5, use_merge=False).gepa_options == {
        "reflection_minibatch_size": 5,
        "use_merge": False,
    }


def test_dspy_optimizer_max_metric_calls_replaces_auto() -> None:
    optimizer = DSPyGepaOptimizer(auto="light", max_metric_calls=40)
    assert optimizer.auto is None and optimizer.limits.max_metric_calls == 40


@pytest.mark.parametrize("cls", [GepaOptimizer, HumanFeedbackOptimizer])
def test_mlflow_optimizers_take_both_reflection_keywords_and_name_unknown_ones(cls) -> None:
    assert cls(reflection_lm="openai:/reflector").reflection_model == "openai:/reflector"
    assert cls(reflection_model="openai:/reflector").reflection_model == "openai:/reflector"
    assert cls().reflection_model == "databricks-claude-sonnet-4"
    with pytest.raises(TypeError, match="both reflection_model= and reflection_lm="):
        cls(reflection_model="openai:/a", reflection_lm="openai:/b")
    with pytest.raises(
        TypeError, match=rf"{cls.__name__}\(\) got an unexpected keyword argument 'reflection_minibatch'"
    ):
        cls(reflection_minibatch=3)
    with pytest.raises(TypeError, match="'valset', which gepa-stream sets itself: pass val_data to optimize"):
        cls(valset=[])
    assert cls(reflection_minibatch_size=5).gepa_kwargs == {"reflection_minibatch_size": 5}


def test_prompt_optimizer_passes_the_alias_through_without_a_clash() -> None:
    settings = PromptOptimizer(reflection_model="openai:/a")._mlflow_settings({"reflection_lm": "openai:/b"})
    assert GepaOptimizer(**settings).reflection_model == "openai:/b"
    with pytest.raises(TypeError, match="unexpected keyword argument 'nonsense'"):
        PromptOptimizer().optimize_with_dspy_gepa(dspy.Predict("q -> a"), [], nonsense=1)
