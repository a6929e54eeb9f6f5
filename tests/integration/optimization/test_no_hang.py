"""No hang, ever: a run abandoned at its wall time (here: a model that never answers) cannot keep
its process alive; the MLflow path through a real litellm provider finishes in fresh processes."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time

SILENT_MODEL_RUN = textwrap.dedent(
    """
    import sys
    from concurrent.futures import ThreadPoolExecutor

    import litellm

    from optimization.errors import OptimizationFailed
    from optimization.run_control import RunLimits, run_with_deadline

    pool = ThreadPoolExecutor(2)  # a worker pool, joined at exit like MLflow's evaluation executor

    def run():
        request = dict(model="openai/support-router", messages=[{"role": "user", "content": "hi"}], timeout=3600)
        return pool.submit(litellm.completion, **request).result()

    try:
        # 5 s: a loaded 2-core machine can take seconds to send the first request (litellm's lazy
        # set-up), and the request must reach the provider before the deadline for the test to mean it
        run_with_deadline(run, RunLimits(max_wall_time=5), grace=0.5, exit_grace=2)
    except OptimizationFailed as error:
        print("FAILED:", error, flush=True)
    """
)


def test_a_silent_model_ends_the_call_with_a_clear_error_and_the_process_exits(fake_provider) -> None:
    fake_provider.inject("hang", times=None)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", SILENT_MODEL_RUN], capture_output=True, text=True, timeout=300
    )
    assert "FAILED: optimization exceeded its wall-time limit of 5s" in done.stdout, done.stderr[-2000:]
    assert (
        done.returncode == 1
        and "abandoned at its wall time" in done.stderr
        and "ThreadPoolExecutor" in done.stderr
    )
    assert (
        fake_provider.stats()["by_model"]["support-router"]["faults"] == 1
    )  # the request really hung at the provider
    assert (
        time.monotonic() - started < 240
    )  # seconds of start-up under load, not the request's 3600 s timeout


FRESH_RUNS = textwrap.dedent(
    '''
    """Import once, then fork N fresh single-run processes, PARALLEL at a time; print one line per run."""
    import faulthandler, os, shutil, signal, sys, threading, time

    import litellm  # noqa: F401  (each run imports it before its threads start: ~7 s of CPU saved per run)
    import mlflow
    from mlflow.entities import Feedback
    from mlflow.genai.scorers import scorer

    from optimization import GepaOptimizer, complete_text
    from optimization.offline.datasets import SEED_ROUTER_PROMPT, support_tickets

    runs, parallel, workdir, limit, task_model = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5]

    @scorer
    def match(outputs, expectations):
        wanted = expectations["expected_response"]
        ok = outputs.strip() == wanted
        return Feedback(value=float(ok), rationale="Correct." if ok else f'Wrong. Expected answer: "{wanted}"')

    mlflow.set_tracking_uri(f"sqlite:///{workdir}/template.db")  # creating a store takes ~15 s: do it once
    prompt = mlflow.genai.register_prompt(name="router", template=SEED_ROUTER_PROMPT)
    # register_prompt leaves a thread linking the prompt to the experiment: a child forked while it
    # holds a lock (or writes the store being copied) could hang for the harness's sake, not MLflow's
    # path: fork only from a single thread, as a run's own process starts
    for thread in threading.enumerate():
        if thread is not threading.main_thread():
            thread.join(60)
    assert threading.active_count() == 1, [t.name for t in threading.enumerate()]

    def one_run(index):
        started = time.monotonic()
        shutil.copy(f"{workdir}/template.db", f"{workdir}/run{index}.db")
        mlflow.set_tracking_uri(f"sqlite:///{workdir}/run{index}.db")
        agent = lambda ticket: complete_text(task_model, mlflow.genai.load_prompt(prompt.uri).format(ticket=ticket))
        optimizer = GepaOptimizer(reflection_model="openai:/reflector", max_metric_calls=24, register=False, max_wall_time=limit)
        result = optimizer.optimize(predict_fn=agent, train_data=support_tickets(30), prompt_uris=[prompt.uri], scorers=[match])
        print(f"run {index}: finished {result.initial_score:.2f} -> {result.final_score:.2f} in {time.monotonic() - started:.1f}s", flush=True)

    pending, alive = list(range(runs)), {}
    while pending or alive:
        while pending and len(alive) < parallel:
            index = pending.pop(0)
            pid = os.fork()
            if pid == 0:
                faulthandler.register(signal.SIGUSR1, all_threads=True)  # a hung run says where
                try:
                    one_run(index)
                    code = 0
                except BaseException as error:
                    print(f"run {index}: error {error!r}", flush=True)
                    code = 1
                sys.stdout.flush()
                os._exit(code)
            alive[pid] = (index, time.monotonic())
        time.sleep(0.2)
        for pid, (index, started) in list(alive.items()):
            if os.waitpid(pid, os.WNOHANG)[0]:
                del alive[pid]
            elif time.monotonic() - started > limit + 60:  # past its wall time and the grace to exit
                os.kill(pid, signal.SIGUSR1)  # its threads' stacks to stderr, then the kill
                time.sleep(2)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                del alive[pid]
                print(f"run {index}: hung, killed after {limit + 60:.0f}s", flush=True)
    '''
)


def test_mlflow_path_through_litellm_finishes_in_20_fresh_processes(fake_provider, tmp_path) -> None:
    """The whole MLflow path through litellm, end to end, in fresh processes: each run is a process
    forked from a launcher that imported the libraries (as every run does before its threads start),
    with no run behind it. Before the workaround 3 of 6 such runs hung (when litellm was still
    imported mid-run); `test_mlflow_autolog_set_up_cannot_deadlock_...` reproduces the deadlock
    deterministically, this test guards the path users take."""
    runs = 20
    done = subprocess.run(  # the task model is offline: reflection (litellm) is the path under test, and it is 4x faster
        [sys.executable, "-c", FRESH_RUNS, str(runs), "3", str(tmp_path), "120", "offline/support-router"],
        capture_output=True,
        text=True,
        timeout=540,  # under pytest's 600 s: a hung run is killed at 180 s, and its stacks are printed
    )
    # forked runs share one pipe: a line can arrive glued to the next, so runs are found anywhere
    finished = set(re.findall(r"run (\d+): finished [\d.]+ -> [\d.]+ in [\d.]+s", done.stdout))
    failed = re.findall(r"run \d+: (?:error|hung)[^\n]*", done.stdout)
    assert finished == {str(i) for i in range(runs)} and not failed, done.stdout + done.stderr[-3000:]
    assert (
        fake_provider.stats()["by_model"]["reflector"]["requests"] >= runs
    )  # reflection went through litellm


IMPORT_ABBA = textwrap.dedent(
    '''
    """Deterministic ABBA: thread A is importing mlflow.openai (holds its module lock) when thread B,
    MLflow's per-evaluation autolog set-up, takes the import-hook lock and imports mlflow.openai too."""
    import os, sys, threading, time, traceback

    import openai  # noqa: F401  a loaded library whose MLflow flavor module is not imported yet
    from mlflow.models.evaluation.utils.trace import configure_autologging_for_evaluation

    from optimization.mlflow_gepa_optimizer import _evaluation_settings

    assert "mlflow.openai" not in sys.modules
    paused, resume = threading.Event(), threading.Event()


    class PauseInsideImport:
        """Pauses thread A inside `import mlflow.openai` (module lock held), at its first nested import."""

        def find_spec(self, name, path=None, target=None):
            if name == "mlflow.openai.constant" and threading.current_thread().name == "A":
                paused.set()
                resume.wait()
            return None


    def waiting_in_import(thread):
        frame = sys._current_frames().get(thread.ident)
        return frame is not None and any(f.name == "_find_and_load" for f in traceback.extract_stack(frame))


    sys.meta_path.insert(0, PauseInsideImport())
    a = threading.Thread(target=lambda: __import__("mlflow.openai"), name="A", daemon=True)
    a.start()
    paused.wait()

    def set_up_evaluation():
        if sys.argv[1] == "fixed":
            with _evaluation_settings(num_threads=1, trace_evaluations=False), configure_autologging_for_evaluation(enable_tracing=True):
                pass
        else:
            with configure_autologging_for_evaluation(enable_tracing=True):
                pass

    b = threading.Thread(target=set_up_evaluation, name="B", daemon=True)
    b.start()
    deadline = time.monotonic() + 20
    while b.is_alive() and not waiting_in_import(b) and time.monotonic() < deadline:
        time.sleep(0.01)
    resume.set()
    a.join(float(sys.argv[2]))
    b.join(float(sys.argv[2]) if not a.is_alive() else 0)
    print("finished" if not (a.is_alive() or b.is_alive()) else "deadlock", flush=True)
    os._exit(0)
    '''
)


def test_mlflow_autolog_set_up_cannot_deadlock_with_a_concurrent_import_under_our_settings() -> None:
    """The deadlock made deterministic: thread A is paused inside `import mlflow.openai` (holding that
    module's lock) while MLflow's per-evaluation autolog set-up runs in thread B. MLflow alone (3.17.2)
    deadlocks — if this first assertion ever fails, upstream fixed it and the workaround can go —;
    under `_evaluation_settings` B imports nothing under its lock and both finish."""
    outcomes = {}
    for variant, wait in (("mlflow-alone", "8"), ("fixed", "60")):
        done = subprocess.run(
            [sys.executable, "-c", IMPORT_ABBA, variant, wait], capture_output=True, text=True, timeout=300
        )
        outcomes[variant] = (
            done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
        )
    assert outcomes == {"mlflow-alone": "deadlock", "fixed": "finished"}
