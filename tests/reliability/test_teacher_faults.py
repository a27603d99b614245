"""Teacher faults and load, against a real HTTP server on 127.0.0.1 that speaks the OpenAI protocol and
misbehaves on purpose: 429 with Retry-After, 500s, dropped connections, replies slower than the deadline,
empty replies, and a server that never recovers. kdagent's `openai` teacher (LangChain's ChatOpenAI over the
OpenAI SDK: jittered exponential backoff that honours Retry-After) must finish the batch, count every
failure, keep at most `teacher.concurrency` requests in flight, and account for every request."""

import os
import time
from collections import Counter, defaultdict

from kdagent.feedback.verifiers import check_with_skill as judge
from kdagent.recipe import TeacherConfig
from kdagent.records import Generation, Task
from kdagent.skills.cot import ChainOfThought
from kdagent.teachers.chat import openai_teacher
from openai_server import ScriptedServer


class FaultServer(ScriptedServer):
    """The first word of the last message names the item; its behaviour is the part before the first
    '-': ok, r429, r500, drop, slow, empty, dead."""

    def __init__(self, delay: float = 0.0):
        self.calls: Counter = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)

        def reply(request, headers):
            item = request["messages"][-1]["content"].split()[0]
            kind = item.split("-")[0]
            with self.lock:
                self.calls[item] += 1
                call = self.calls[item]
                self.times[item].append(time.monotonic())
            time.sleep(delay)
            if kind == "r429" and call == 1:
                return 429, "slow down", {"Retry-After": "1"}
            if (kind == "r500" and call <= 2) or kind == "dead":
                return 500, "boom"
            if kind == "drop" and call == 1:
                return None
            if kind == "slow" and call == 1:
                time.sleep(3)  # past the client's deadline
            return "" if kind == "empty" else f"{item} The answer is 5."

        super().__init__(reply, model="faulty")

    def teacher(self, **overrides):
        settings = (
            dict(
                kind="openai",
                model="faulty",
                base_url=self.url,
                samples=1,
                max_retries=3,
                timeout_s=1.0,
                concurrency=8,
                max_new_tokens=16,
            )
            | overrides
        )
        return openai_teacher(TeacherConfig(**settings), None)


def _prompts(items):
    return [[{"role": "user", "content": f"{item} what is 2 + 3?"}] for item in items]


def test_every_fault_is_retried_or_recorded_and_the_batch_completes():
    items = ["ok-1", "r429-1", "r500-1", "drop-1", "slow-1", "empty-1", "dead-1"]
    with FaultServer() as server:
        teacher = server.teacher()
        started = time.monotonic()
        replies = teacher.generate(_prompts(items), seed=0)
        elapsed = time.monotonic() - started
    got = dict(zip(items, (r[0] for r in replies)))
    for item in ("ok-1", "r429-1", "r500-1", "drop-1", "slow-1"):
        assert got[item] == f"{item} The answer is 5.", item  # recovered by retrying
    assert got["empty-1"] == "" and got["dead-1"] == ""
    assert server.calls["ok-1"] == 1 and server.calls["r429-1"] == 2 and server.calls["r500-1"] == 3
    assert server.calls["drop-1"] == 2 and server.calls["slow-1"] == 2
    assert server.calls["dead-1"] == 4  # the first try and max_retries=3, then given up
    gap = server.times["r429-1"][1] - server.times["r429-1"][0]
    assert gap >= 0.95, f"Retry-After: 1 not honoured ({gap:.2f}s)"
    assert len(teacher.failures) == 2 and any("500" in f or "InternalServerError" in f for f in teacher.failures)
    assert "empty reply" in teacher.failures
    assert elapsed < 30  # each call has a deadline; nothing hangs


def test_a_task_whose_retries_ran_out_is_recorded_as_failed_never_dropped():
    tasks = {t.id: t for t in (Task(id="a", prompt="ok-a", answer="5"), Task(id="b", prompt="dead-b", answer="5"))}
    with FaultServer() as server:
        teacher = server.teacher(max_retries=1)
        replies = teacher.generate(_prompts(["ok-a", "dead-b"]), seed=0)
    gens = [
        Generation(
            id=f"g-{tid}",
            task_id=tid,
            round=1,
            sample=0,
            teacher=teacher.label,
            skill="cot",
            messages=[],
            text=reply[0],
        )
        for tid, reply in zip(tasks, replies)
    ]
    ok, dead = judge(ChainOfThought(), tasks, gens)
    assert ok.passed and not ok.failed
    assert dead.failed and not dead.passed and dead.reason == "empty reply from the teacher"


def test_a_thousand_requests_stay_under_the_concurrency_cap_with_flat_memory():
    def rss_mb() -> float:
        with open(f"/proc/{os.getpid()}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    with FaultServer(delay=0.02) as server:
        teacher = server.teacher(concurrency=16, max_retries=0, timeout_s=10)
        teacher.generate(_prompts([f"ok-warm{i}" for i in range(200)]), seed=0)
        before = rss_mb()
        items = [f"ok-{i}" for i in range(1000)]
        replies = teacher.generate(_prompts(items), seed=1)
        after = rss_mb()
    assert server.max_in_flight <= 16 and server.max_in_flight >= 8  # capped, and actually concurrent
    assert [r[0].split()[0] for r in replies] == items  # every request answered, in order, by its own id
    assert all(server.calls[i] == 1 for i in items) and not teacher.failures
    assert after - before < 60, f"memory grew by {after - before:.0f} MB over 1,000 requests"
