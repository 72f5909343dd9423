"""dcgan.py --strategy multiworker for real: two worker processes on loopback (TF_CONFIG with 127.0.0.1 ports).

They must hold the same weights after each step and log what one process logs on the same global batch; only
the chief writes the run directory; --resume continues both; a worker that dies ends the other in one line
within --worker-timeout, never a hang. Every process is bounded by a timeout."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROCESS_SECONDS = 240  # the most any worker may take before the test calls it hung


def free_ports(count=2):
    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("127.0.0.1", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


def start(argv, out, *, tf_config_text=None, tmpdir=None):
    """A process writing its stdout and stderr to files under `out` (a pipe could fill up and block it)."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    if tf_config_text:
        env["TF_CONFIG"] = tf_config_text
    if tmpdir:
        os.makedirs(tmpdir, exist_ok=True)
        env["TMPDIR"] = str(tmpdir)
    stdout, stderr = open(f"{out}.out", "w"), open(f"{out}.err", "w")
    return subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stdout=stdout, stderr=stderr)


def finish(processes, outs, timeout=PROCESS_SECONDS):
    """(return code, stdout, stderr) of each process; all are killed if one outlives the timeout."""
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            pytest.fail(f"a worker hung for {timeout} s")
    return [(process.returncode, open(f"{out}.out").read(), open(f"{out}.err").read())
            for process, out in zip(processes, outs)]


STEP_SCRIPT = """
import json, os, sys
import runs, dcgan  # runs sets the Keras backend
import tensorflow as tf
import numpy as np, keras

name = sys.argv[1]
strategy = runs.make_strategy(name, worker_timeout=60)  # first: collectives are configured at start-up
config = json.loads(sys.argv[2])
rng = np.random.default_rng(0)
z = tf.constant(rng.standard_normal((32, config["latent_dim"])).astype(np.float32))
images = rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
keras.utils.set_random_seed(0)
state = [keras.ops.convert_to_numpy(v) for v in dcgan.build_gan(config).state_variables()]


def latent(batch_size):  # each replica its own slice of the step's global batch of z
    context = tf.distribute.get_replica_context()
    start = context.replica_id_in_sync_group * batch_size
    return tf.gather(z, tf.range(start, start + batch_size) + 16 * tf.cast(gan.d_steps % 2, tf.int32))


class Logs(keras.callbacks.Callback):
    def on_train_batch_end(self, step, logs=None):
        rows.append({key: float(np.ravel(logs[key])[0]) for key in dcgan.STEP_COLUMNS})


with strategy.scope():
    gan = dcgan.build_gan(config, replicas=strategy.num_replicas_in_sync)
    for variable, value in zip(gan.state_variables(), state):
        variable.assign(value)
gan._latent = latent
rows = []
data = tf.data.Dataset.from_tensor_slices(images).batch(16)
data = data.map(runs.to_float_batch) if name == "multiworker" else data
gan.fit(data, epochs=1, callbacks=[Logs()], verbose=0, shuffle=False)
weights = [float(np.abs(keras.ops.convert_to_numpy(v)).astype(np.float64).sum())
           for v in gan.generator.weights + gan.discriminator.weights]
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "steps": rows, "weights": weights}))
"""

TINY_GAN = {"image_size": 32, "filters": 4, "kernel": 4, "latent_dim": 8, "latent_distribution": "normal",
            "g_steps": 1, "label_smoothing": 0.0, "seed": 0, "learning_rate": 2e-4, "beta1": 0.5}


def test_two_workers_hold_the_same_weights_and_log_one_process_losses(tmp_path):
    ports = free_ports()
    argv = lambda name: ["-c", STEP_SCRIPT, name, json.dumps(TINY_GAN)]
    outs = [tmp_path / "worker0", tmp_path / "worker1", tmp_path / "single"]
    processes = [start(argv("multiworker"), outs[index], tf_config_text=tf_config(ports, index)) for index in (0, 1)]
    processes.append(start(argv("none"), outs[2]))
    results = []
    for code, stdout, stderr in finish(processes, outs):
        assert code == 0, stderr[-2000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    first, second, single = results
    assert first["replicas"] == second["replicas"] == 2 and single["replicas"] == 1
    assert len(first["steps"]) == len(single["steps"]) == 2
    np.testing.assert_allclose(first["weights"], second["weights"], rtol=1e-6)  # the workers stay in step
    np.testing.assert_allclose(first["weights"], single["weights"], rtol=1e-4)  # and train what one process does
    for worker, alone in zip(first["steps"], single["steps"]):
        for name in alone:
            np.testing.assert_allclose(worker[name], alone[name], rtol=1e-4, err_msg=name)


def worker_flags(tiny_celeba, runs_dir, *extra):
    return ["dcgan.py", "--strategy", "multiworker", "--data", str(tiny_celeba), "--image-size", "32", "--filters",
            "8", "--batch-size", "16", "--steps-per-epoch", "2", "--runs-dir", str(runs_dir), "--name", "mw",
            "--cache-dir", str(runs_dir / "cache"), "--precision", "float32", "--worker-timeout", "60", *extra]


def listing(directory):
    return sorted((os.path.relpath(os.path.join(root, name), directory),
                   os.path.getmtime(os.path.join(root, name)))
                  for root, _, names in os.walk(directory) for name in names)


def run_two(tiny_celeba, tmp_path, label, *extra):
    """Worker 0 (the chief) with runs in tmp_path/chief, worker 1 with runs in tmp_path/other."""
    ports = free_ports()
    outs = [tmp_path / f"{label}0", tmp_path / f"{label}1"]
    processes = [start(worker_flags(tiny_celeba, tmp_path / ("chief" if index == 0 else "other"), *extra),
                       outs[index], tf_config_text=tf_config(ports, index), tmpdir=tmp_path / f"tmp{index}")
                 for index in (0, 1)]
    return finish(processes, outs)


def test_only_the_chief_writes_the_run_and_both_resume(tiny_celeba, tmp_path):
    (tmp_path / "other").mkdir()
    results = run_two(tiny_celeba, tmp_path, "first", "--epochs", "1")
    for code, _, stderr in results:
        assert code == 0, stderr[-2000:]
    assert "worker 1 done; the chief holds the run in" in results[1][1]
    run = tmp_path / "chief" / "mw"
    assert (run / "generator.keras").is_file() and np.load(run / "d_losses.npy").shape == (1,)
    assert not (tmp_path / "other" / "mw").exists()  # worker 1 wrote no run of its own
    assert os.listdir(tmp_path / "tmp1") == []  # and removed its private directory
    # Without a shared disk, each worker gets a copy of the chief's run directory before --resume.
    shutil.copytree(run, tmp_path / "other" / "mw")
    before = listing(tmp_path / "other" / "mw")
    results = run_two(tiny_celeba, tmp_path, "resumed", "--resume", "--epochs", "2")
    for code, _, stderr in results:
        assert code == 0, stderr[-2000:]
    assert np.load(run / "d_losses.npy").shape == (2,)
    assert listing(tmp_path / "other" / "mw") == before  # the copy is read, never written


def test_a_worker_that_dies_ends_the_other_in_one_line(tiny_celeba, tmp_path):
    ports = free_ports()
    outs = [tmp_path / "chief", tmp_path / "doomed"]
    processes = [start(worker_flags(tiny_celeba, tmp_path / f"runs{index}", "--epochs", "500", "--worker-timeout",
                                    "30"), outs[index], tf_config_text=tf_config(ports, index))
                 for index in (0, 1)]
    checkpoint = tmp_path / "runs0" / "mw" / "checkpoints" / "last.npz"
    deadline = time.monotonic() + PROCESS_SECONDS
    while not checkpoint.exists() and time.monotonic() < deadline and processes[0].poll() is None:
        time.sleep(0.5)
    processes[1].kill()  # SIGKILL: no goodbye to the other worker
    started = time.monotonic()
    (code, _, stderr), _ = finish(processes, outs, timeout=120)
    assert code == 1 and time.monotonic() - started < 120
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: training stopped: another worker stopped answering"), stderr[-2000:]
    assert "the last checkpoint" in last


@pytest.mark.parametrize("text, expected", [
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}', (True, "worker 0")),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}', (False, "worker 1")),
    ('{"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}',
     (False, "worker 0")),  # a cluster with a chief: worker 0 is not it
    ('{"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', (True, "chief 0")),
])
def test_the_chief_is_read_from_tf_config(text, expected, monkeypatch):
    import runs

    monkeypatch.setenv("TF_CONFIG", text)
    assert runs.worker_role("multiworker") == expected
    assert runs.worker_role("none") == (True, None)


@pytest.mark.parametrize("text, message", [
    (None, "--strategy multiworker needs TF_CONFIG"),
    ("{not json", "TF_CONFIG is not a cluster and a task of it"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "TF_CONFIG is not a cluster"),
])
def test_a_missing_or_broken_tf_config_is_one_line(tiny_celeba, tmp_path, text, message, monkeypatch, capsys):
    import data_prep
    import dcgan

    if text is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", text)
    with pytest.raises(SystemExit) as exit_info:
        data_prep.run_cli(dcgan.main, worker_flags(tiny_celeba, tmp_path)[1:] + ["--epochs", "1"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not (tmp_path / "mw").exists()  # refused before anything is written
