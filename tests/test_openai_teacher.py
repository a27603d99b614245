"""The `openai` teacher against a real OpenAI-compatible server on loopback (`transformers serve`)."""

import pytest

from conftest import free_port
from kdagent.errors import UserError
from kdagent.recipe import TeacherConfig
from kdagent.teachers.chat import openai_teacher


@pytest.mark.integration
def test_openai_teacher_samples_from_a_real_server(openai_server, monkeypatch):
    url, model = openai_server
    monkeypatch.setenv("KDAGENT_TEST_KEY", "sk-canary-123")
    config = TeacherConfig(
        kind="openai",
        model=model,
        base_url=f"{url}/v1",
        api_key_env="KDAGENT_TEST_KEY",
        samples=2,
        temperature=1.0,
        max_new_tokens=8,
        concurrency=2,
        timeout_s=60,
        max_retries=1,
    )
    teacher = openai_teacher(config, None)
    prompts = [[{"role": "user", "content": "Say hi."}], [{"role": "user", "content": "Count to three."}]]
    replies = teacher.generate(prompts, seed=0)
    assert teacher.failures == []
    assert len(replies) == 2 and all(len(r) == 2 for r in replies)
    assert all(isinstance(t, str) and t for r in replies for t in r)
    assert "sk-canary-123" not in repr(teacher.chat)  # held as a SecretStr


def test_unreachable_endpoint_fails_per_request_not_per_batch():
    config = TeacherConfig(
        kind="openai",
        model="m",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        samples=2,
        max_new_tokens=4,
        timeout_s=2,
        max_retries=0,
        concurrency=3,
    )
    teacher = openai_teacher(config, None)
    replies = teacher.generate([[{"role": "user", "content": "x"}]] * 3, seed=0)
    assert replies == [["", ""]] * 3
    assert len(teacher.failures) == 6 and all("Connection" in f for f in teacher.failures)


def test_missing_key_variable_is_a_user_error(monkeypatch):
    monkeypatch.delenv("KDAGENT_ABSENT_KEY", raising=False)
    with pytest.raises(UserError, match="KDAGENT_ABSENT_KEY is not set"):
        openai_teacher(
            TeacherConfig(kind="openai", model="m", base_url="http://127.0.0.1:1/v1", api_key_env="KDAGENT_ABSENT_KEY"),
            None,
        )
    with pytest.raises(UserError, match="needs teacher.model and teacher.base_url"):
        openai_teacher(TeacherConfig(kind="openai"), None)


@pytest.mark.integration
def test_langchain_kind_uses_a_chat_model_a_plugin_registers(openai_server):
    from langchain_openai import ChatOpenAI

    from kdagent.hookspecs import hookimpl
    from kdagent.plugins import build_plugins

    url, model = openai_server

    class LocalChat:
        @hookimpl
        def kdagent_register_chat_models(self, register):
            register(
                "local-chat",
                lambda config: ChatOpenAI(
                    model=model, base_url=f"{url}/v1", api_key="none", max_tokens=config.max_new_tokens
                ),
            )

    plugins = build_plugins(load_entry_points=False)
    plugins.pm.register(LocalChat(), name="local-chat-plugin")
    plugins.chat_models.clear()
    from kdagent.plugins import _collect

    _collect(plugins, "chat_models")
    assert plugins.chat_models["local-chat"].plugin == "local-chat-plugin"
    teacher = plugins.create_teacher(
        TeacherConfig(kind="langchain", model="local-chat", samples=1, max_new_tokens=6), None
    )
    assert teacher.label == "langchain:local-chat"
    (replies,) = teacher.generate([[{"role": "user", "content": "Say hi."}]], seed=0)
    assert teacher.failures == [] and replies[0]
    with pytest.raises(UserError, match=r"unknown chat model 'nope' .*registered: local-chat"):
        plugins.create_teacher(TeacherConfig(kind="langchain", model="nope"), None)
