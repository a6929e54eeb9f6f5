"""Template-agent helpers: prompt URIs and the guide's single-dict predict_fn form."""

import pytest

from optimization.template_agent import as_keyword_predict_fn, prompt_uri


def test_bare_names_mean_the_latest_version() -> None:
    assert prompt_uri("support_router") == "prompts:/support_router@latest"
    assert prompt_uri("prompts:/support_router/3") == "prompts:/support_router/3"
    with pytest.raises(ValueError, match="prompt_uri_or_name"):
        prompt_uri(" ")


def test_single_dict_predict_fn_is_called_with_the_inputs_dict() -> None:
    assert as_keyword_predict_fn(lambda inputs: inputs["query"])(query="hi") == "hi"
    keyword = lambda query: query.upper()  # noqa: E731 - the form MLflow expects already
    assert as_keyword_predict_fn(keyword) is keyword
    with pytest.raises(ValueError, match="predict_fn"):
        as_keyword_predict_fn("not callable")
