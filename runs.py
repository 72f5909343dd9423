"""The bookkeeping every training in this repository shares, written once: the Keras backend and a quiet
TensorFlow start, run directories and their config.json, resuming with the flags a user typed, checkpoints over a
model's state variables, the epoch recorder (NaN guard, atomic log.csv, a per-epoch save hook), the
fit-for-N-epochs driver, the networks saved after each epoch, precision policy and strategy, batched prediction.

dcgan.py, encoder.py, vae.py, makeover.py and evaluate.py import this module; it imports only data_prep.
"""

import os

# TensorFlow's C++ start-up lines print while it loads, before any flag is read: they are silenced unless the user
# asked for TensorFlow's log with TF_CPP_MIN_LOG_LEVEL=0 (or 1) in the environment.
SHOW_TENSORFLOW_START = os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("0", "1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # the one backend this repository is written for
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import contextlib
import csv
import json
import math
import platform
import shutil
import sys
import tempfile
import time

import cv2
import numpy as np

import data_prep

with data_prep.quiet_tensorflow_start(verbose=SHOW_TENSORFLOW_START):
    import keras  # noqa: E402  (after the backend is chosen)
    import tensorflow as tf  # noqa: E402

PRECISIONS = ("auto", "float32", "mixed_bfloat16")


# ----------------------------------------------------------------------------------------------------------
# The command line


def run_cli(main_function, argv=None):
    """A script's main() as data_prep.run_cli runs it (bad input: one line and exit 2), after TensorFlow's first
    device query, made quietly: on a machine without a GPU it prints a CUDA probe's lines, which would otherwise
    come with the script's first TensorFlow operation. Importing a script queries nothing."""
    with data_prep.quiet_tensorflow_start(verbose=SHOW_TENSORFLOW_START):
        tf.config.list_physical_devices()
    return data_prep.run_cli(main_function, argv)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one DataError line (data_prep.run_cli prints it and exits 2)."""

    def error(self, message):
        raise data_prep.DataError(f"{self.prog}: {message} (see --help)")


def typed_flags(parser, argv):
    """The destinations the user actually typed on `parser`'s command line (argparse hides them behind defaults).
    The parser is changed: pass a fresh one."""
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def training_parser(doc, *, name):
    """A training script's parser: its docstring's first paragraph as the description, defaults shown, --data and
    --name (the run directory is <runs-dir>/<name>)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", default=None, help="CelebA directory (either layout); default: the synthetic CelebA")
    parser.add_argument("--name", default=name, help="run name: the run directory is <runs-dir>/<name>")
    return parser


def add_run_flags(add):
    """The flags every resumable training shares: where its run directory lives, resuming it, the image cache, the
    precision it computes in."""
    add("--runs-dir", default="runs", help="where run directories live")
    add("--resume", action="store_true", help="continue the run after its last finished epoch")
    add("--cache-dir", default=data_prep.DEFAULT_CACHE_DIR, help="where prepared image arrays are cached")
    add("--steps-per-epoch", type=int, default=None, help="cap the steps of an epoch (quick checks)")
    add("--precision", default="auto", choices=PRECISIONS,
        help="compute dtype policy; auto: mixed_bfloat16 where the CPU or GPU runs bfloat16 natively, else float32")
    add("--verbose", action="store_true", help=data_prep.VERBOSE_HELP)


def add_optimizer_flags(add, *, epochs, batch_size, what, epochs_help="epochs to train in all",
                        batch_help="images per step", learning_rate=2e-4, beta1=0.5):
    """--epochs, --batch-size and Adam's --learning-rate and --beta1, with a training's own defaults."""
    add("--epochs", type=int, default=epochs, help=epochs_help)
    add("--batch-size", type=int, default=batch_size, help=batch_help)
    add("--learning-rate", type=float, default=learning_rate, help=f"Adam learning rate of {what}")
    add("--beta1", type=float, default=beta1, help="Adam beta_1")


def training_config(make_parser, argv, *, resumable, validate, model=None, same=None):
    """Flags -> (config, run_dir, resume) for a training script. A new run refuses a directory that holds one and
    records the library versions; a resumed one reads config.json and lets only the `resumable` flags change
    (`same` as in resumed_config). Then `validate(config)`, absolute paths, and the precision the run computes in."""
    args = make_parser().parse_args(argv)
    run_dir = os.path.join(args.runs_dir, args.name)
    config = {"model": model, **vars(args)} if model else vars(args)
    if args.resume:
        read_config(run_dir, model=model)
        config = resumed_config(config, run_dir, typed=typed_flags(make_parser(), argv), resumable=resumable,
                                defaults=parser_defaults(make_parser()), same=same)
    else:
        check_new_run(run_dir)
        config["versions"] = library_versions()
    validate(config)
    absolute_paths(config)
    config["compute_precision"], config["precision_reason"] = resolve_precision(config["precision"])
    return config, run_dir, args.resume


def parser_defaults(parser):
    return {action.dest: action.default for action in parser._actions if action.dest != "help"}


def check_new_run(out_dir, what="a run"):
    """A new training refuses a directory whose checkpoint holds one."""
    if os.path.isfile(os.path.join(out_dir, "checkpoints", "last.npz")):
        raise data_prep.DataError(f"{out_dir} already holds {what}; pass --resume to continue it"
                                  + (" or --name for a new one" if what == "a run" else ""))


def resumed_config(config, out_dir, *, typed, resumable, defaults=None, same=None):
    """The config of a resumed training: config.json of `out_dir`, with the typed flags in `resumable` taken from
    `config`; any other typed flag that differs from the saved value (or, for a key an older run did not save,
    from its default) is one clear error. `same(key, saved, config)` overrides the comparison of a key."""
    saved = read_config(out_dir)
    defaults = defaults or {}
    for key in sorted(typed - resumable):
        equal = same(key, saved, config) if same else None
        if equal is None:
            equal = saved.get(key, defaults.get(key)) == config[key]
        if not equal:
            raise data_prep.DataError(f"--{key.replace('_', '-')} cannot change when resuming "
                                      f"({saved.get(key)!r} in {out_dir}/config.json)")
    overrides = {key: config[key] for key in typed & resumable}
    return {**saved, **overrides, "resume": True,
            "resumed_with": [*saved.get("resumed_with", []), library_versions()]}


def split_command(argv, commands, script):
    """(command, the rest of argv) when the first word names one of `commands`, else one clear error."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in commands:
        given = argv[0] if argv else "nothing"
        raise data_prep.DataError(f"expected a command ({', '.join(commands)}), got {given}; "
                                  f"see `python {script} <command> --help`")
    return argv[0], argv[1:]


def print_config(out_dir, config, *, resume):
    print(("resuming " if resume else "training ") + out_dir + " with\n"
          + "\n".join(f"  {key}: {value}" for key, value in config.items() if key not in ("versions", "resumed_with")))


def check_at_least(config, names, minimum=1):
    """Each named flag must be at least `minimum`; otherwise one ValueError naming the flag and its value."""
    for name in names:
        if config.get(name, minimum) < minimum:
            what = "a positive integer" if minimum == 1 else f"{minimum} or more"
            raise ValueError(f"--{name.replace('_', '-')} must be {what}, got {config[name]}")


def absolute_paths(config):
    """--data and --cache-dir as absolute paths, so that a run can be used from any working directory."""
    config["cache_dir"] = os.path.abspath(os.path.expanduser(config["cache_dir"]))
    if config.get("data") is not None:
        config["data"] = os.path.abspath(os.path.expanduser(config["data"]))
    return config


# ----------------------------------------------------------------------------------------------------------
# Run directories, configs and checkpoints


def read_config(run_dir, *, model=None):
    """A run's config.json; with `model` ("makeover"), one line when the run is missing or of another script."""
    path = os.path.join(run_dir, "config.json")
    if model and not os.path.isdir(run_dir):
        raise data_prep.DataError(f"run not found: {run_dir} (train one with `python {model}.py --name NAME`)")
    if not os.path.isfile(path):
        raise data_prep.DataError(f"not a run directory (no config.json): {run_dir}")
    with open(path) as handle:
        config = json.load(handle)
    if model and config.get("model") != model:
        raise data_prep.DataError(f"{run_dir} is not a {model} run (its config.json has no \"model\": \"{model}\")")
    return config


# The README's demo, word for word (a test checks that the README holds it).
DEMO_COMMAND = ("python dcgan.py --image-size 32 --epochs 40 --kernel 4 --filters 64 --minibatch-std --ema 0.999 "
                "--batch-size 32 --loss hinge --time-budget 12 --name demo && python facemath.py demo --run runs/demo")


def newest_run(runs_dir="runs"):
    """The run in `runs_dir` whose generator.keras is newest (a GAN or a VAE run; no baselines, no makeovers)."""
    found = []
    for name in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        generator = os.path.join(runs_dir, name, "generator.keras")
        if os.path.isfile(generator) and os.path.isfile(os.path.join(runs_dir, name, "config.json")):
            config = read_config(os.path.join(runs_dir, name))
            if "latent_dim" in config and config.get("kind") not in ("untrained", "noise"):
                found.append((os.path.getmtime(generator), os.path.join(runs_dir, name)))
    if not found:
        raise data_prep.DataError(f"no trained run with a generator in {runs_dir}/; train one first with the README's "
                                  f"demo (13 to 16 minutes on 2 CPU cores): `{DEMO_COMMAND}`")
    return max(found)[1]


def write_config(run_dir, config):
    data_prep.write_json(os.path.join(run_dir, "config.json"), config)


def library_versions():
    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "opencv": cv2.__version__}


def save_weights_atomic(model, path):
    with data_prep.atomic_path(path) as temporary:
        model.save_weights(temporary)


def save_model_atomic(model, path):
    with data_prep.atomic_path(path) as temporary:
        model.save(temporary)


def save_epoch_networks(run_dir, number, networks, variables, history, *, arrays=None):
    """The end of a finished epoch: each network's weights ({name: model}) saved as that epoch's, then the
    resumable checkpoint and the per-epoch arrays (save_checkpoint)."""
    for network, model in networks.items():
        save_weights_atomic(model, epoch_weights_path(run_dir, network, number))
    save_checkpoint(run_dir, variables, history, arrays=arrays)


def save_checkpoint(out_dir, variables, history, *, arrays=None):
    """checkpoints/last.npz (every variable, in order, and the per-epoch history), then one .npy per history
    entry named in `arrays` ({history name: file name}); each written to a temporary file, then renamed."""
    archive = {f"state_{index:04d}": np.asarray(keras.ops.convert_to_numpy(variable))
               for index, variable in enumerate(variables)}
    archive.update({f"history_{name}": np.asarray(values, np.float64) for name, values in history.items()})
    with data_prep.atomic_path(os.path.join(out_dir, "checkpoints", "last.npz")) as temporary:
        np.savez(temporary, **archive)
    for name, file_name in (arrays or {}).items():
        data_prep.atomic_save_npy(os.path.join(out_dir, file_name), np.asarray(history[name], np.float32))


def read_checkpoint(out_dir):
    """(state arrays, per-epoch history) from <out_dir>/checkpoints/last.npz."""
    path = os.path.join(out_dir, "checkpoints", "last.npz")
    if not os.path.isfile(path):
        raise data_prep.DataError(f"no checkpoint to resume from: {path} (did the first epoch finish?)")
    with np.load(path) as archive:
        state = [archive[key] for key in sorted(key for key in archive.files if key.startswith("state_"))]
        history = {key[len("history_"):]: archive[key].tolist() for key in archive.files if key.startswith("history_")}
    return state, history


def load_checkpoint(out_dir, variables):
    """Assign checkpoints/last.npz to `variables` (in save_checkpoint's order); returns the per-epoch history."""
    path = os.path.join(out_dir, "checkpoints", "last.npz")
    state, history = read_checkpoint(out_dir)
    if len(state) != len(variables):
        raise data_prep.DataError(f"{path} holds {len(state)} arrays, the model has {len(variables)} variables")
    for variable, value in zip(variables, state):
        if tuple(variable.shape) != value.shape:
            raise data_prep.DataError(f"{path}: shape {value.shape} does not fit {variable.path} {variable.shape}")
        variable.assign(value)
    return history


def start_step_log(run_dir, columns):
    data_prep.atomic_write_bytes(os.path.join(run_dir, "log.csv"), ("epoch,step," + ",".join(columns)
                                                                    + "\n").encode())


def truncate_log(run_dir, finished_epochs):
    """Drop log.csv rows of an epoch that never finished (a run killed mid-epoch), atomically."""
    path = os.path.join(run_dir, "log.csv")
    if not os.path.isfile(path):
        return
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    kept = [rows[0]] + [row for row in rows[1:] if row and int(row[0]) <= finished_epochs]
    data_prep.atomic_write_bytes(path, "".join(",".join(row) + "\n" for row in kept).encode())


def add_missing_columns(run_dir, history, *, history_names, step_columns):
    """A run saved before a column existed (a loss added later) resumes with it as 0 in its history and log.csv
    (rewritten in `step_columns`' order, the order in which new rows are appended)."""
    for name in history_names:
        history.setdefault(name, [0.0] * len(next(iter(history.values()))))
    path = os.path.join(run_dir, "log.csv")
    with open(path) as handle:
        rows = handle.read().splitlines()
    header, columns = rows[0].split(","), ["epoch", "step", *step_columns]
    if header != columns:
        values = [dict(zip(header, row.split(","))) for row in rows[1:]]
        data_prep.atomic_write_bytes(path, "".join(",".join(line) + "\n" for line in [columns] + [
            [value.get(name, "0") for name in columns] for value in values]).encode())


def remove_stale_temporaries(run_dir):
    """Delete the temporary files (name.tmp-<pid>.ext) that a run killed mid-write left behind; only called when
    resuming, when no other process writes to the run."""
    for directory in (run_dir, os.path.join(run_dir, "checkpoints"), os.path.join(run_dir, "samples")):
        for name in os.listdir(directory) if os.path.isdir(directory) else []:
            if ".tmp-" in name:
                os.remove(os.path.join(directory, name))


def read_step_log(run_dir):
    import pandas as pd

    path = os.path.join(run_dir, "log.csv")
    if not os.path.isfile(path):
        raise data_prep.DataError(f"no log.csv in {run_dir}")
    return pd.read_csv(path)


def epoch_weights_path(run_dir, network, epoch):
    return os.path.join(run_dir, "checkpoints", f"{network}_epoch_{epoch:03d}.weights.h5")


def saved_epochs(run_dir, network="generator"):
    """The epochs after which `network`'s weights were saved, in order. A run killed while writing leaves a
    temporary file (<network>_epoch_007.tmp-<pid>.weights.h5): it is not an epoch and is skipped."""
    directory = os.path.join(run_dir, "checkpoints")
    prefix, suffix = f"{network}_epoch_", ".weights.h5"
    names = os.listdir(directory) if os.path.isdir(directory) else []
    return sorted(int(name[len(prefix):-len(suffix)]) for name in names
                  if name.startswith(prefix) and name.endswith(suffix) and name[len(prefix):-len(suffix)].isdigit())


def load_saved_network(run_dir, network, build, *, epoch=None):
    """A run's network: the final <network>.keras, or `build()` given the weights saved after `epoch` (the newest
    saved epoch when the run has no final network yet)."""
    final = os.path.join(run_dir, f"{network}.keras")
    if epoch is None and os.path.isfile(final):
        return keras.saving.load_model(final, compile=False)
    epochs = saved_epochs(run_dir, network)
    if not epochs:
        raise data_prep.DataError(f"no {network} in {run_dir} (neither {network}.keras nor an epoch's weights)")
    epoch = epochs[-1] if epoch is None else epoch
    if epoch not in epochs:
        raise data_prep.DataError(f"{run_dir} has no {network} for epoch {epoch}; saved epochs: {epochs}")
    model = build()
    model.load_weights(epoch_weights_path(run_dir, network, epoch))
    return model


# ----------------------------------------------------------------------------------------------------------
# Loss plots (any run with a discriminator: d_losses.npy, g_losses.npy and log.csv's D columns)


def smooth(values, weight=0.98):
    """TensorBoard-style exponential moving average, debiased at the start."""
    smoothed, average = [], 0.0
    for index, value in enumerate(values):
        average = weight * average + (1 - weight) * value
        smoothed.append(average / (1 - weight ** (index + 1)))
    return np.asarray(smoothed)


def plot_runs(run_dirs, out_path, *, smoothing=0.98):
    """D and G loss per epoch, smoothed per step, and D(x), D(G(z)) per step, for one run or several overlaid."""
    for run_dir in run_dirs:
        read_config(run_dir)  # a directory that is not a run fails in one line, before matplotlib loads
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for run_dir in run_dirs:
        label = os.path.basename(os.path.normpath(run_dir))
        d_losses = np.load(os.path.join(run_dir, "d_losses.npy"))
        g_losses = np.load(os.path.join(run_dir, "g_losses.npy"))
        epochs = np.arange(1, len(d_losses) + 1)
        line, = axes[0].plot(epochs, d_losses, "o-", label=f"{label} D")
        axes[0].plot(epochs, g_losses, "s--", color=line.get_color(), label=f"{label} G")
        steps = read_step_log(run_dir)
        position = np.arange(1, len(steps) + 1)
        axes[1].plot(position, smooth(steps["d_loss"], smoothing), color=line.get_color(), label=f"{label} D")
        axes[1].plot(position, smooth(steps["g_loss"], smoothing), "--", color=line.get_color(), label=f"{label} G")
        axes[2].plot(position, smooth(steps["d_real"], smoothing), color=line.get_color(), label=f"{label} D(x)")
        axes[2].plot(position, smooth(steps["d_fake"], smoothing), ":", color=line.get_color(),
                     label=f"{label} D(G(z))")
    for axis, title, xlabel in zip(axes, ("loss per epoch (mean)", f"loss per step (EMA {smoothing})",
                                          "discriminator outputs per step"), ("epoch", "step", "step")):
        axis.set_title(title)
        axis.set_xlabel(xlabel)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    return data_prep.save_figure(figure, out_path)


# ----------------------------------------------------------------------------------------------------------
# The epoch recorder and the training driver


class TrainingModel(keras.Model):
    """The base of every trainer here (DCGAN, Makeover, EncoderTrainer, VAE): networks built before it, as functional
    models, so there is no call() for Keras to trace; and a Mean tracker per figure train_step reports, which fit()
    shows and resets each epoch."""

    def __init__(self, figures, **kwargs):
        super().__init__(**kwargs)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in figures}
        self.built = True

    @property
    def metrics(self):
        return list(self.trackers.values())


class WeightedLossModel(TrainingModel):
    """A trainer with one optimizer whose loss is a weighted sum of named parts (E's training, the VAE): the subclass
    gives `parts(images, training=)` (a dict of scalar losses) and the networks it trains; train_step does the
    rest and reports the loss and every part."""

    def __init__(self, weights, *, trained, **kwargs):
        super().__init__(("loss", *weights), **kwargs)
        self.part_weights = dict(weights)
        self.trained = trained  # the networks whose variables the optimizer updates

    def compile(self, optimizer, **kwargs):
        super().compile(**kwargs)
        self.loss_optimizer = optimizer
        self.loss_optimizer.build(self.trained_variables)  # slots now, so that a checkpoint can restore them

    @property
    def trained_variables(self):
        return [variable for network in self.trained for variable in network.trainable_variables]

    def train_step(self, images):
        images = to_float_batch(images)
        with tf.GradientTape() as tape:
            parts = self.parts(images, training=True)
            loss = tf.add_n([weight * parts[name] for name, weight in self.part_weights.items() if weight])
        variables = self.trained_variables
        gradients = tape.gradient(loss, [variable.value for variable in variables])
        self.loss_optimizer.apply_gradients(zip(gradients, variables))
        step = {"loss": loss, **parts}
        for name, value in step.items():
            self.trackers[name].update_state(value)
        return step


class TrainingStopped(RuntimeError):
    """Training met a non-finite loss; the last good checkpoint is kept."""


class EpochRecorder(keras.callbacks.Callback):
    """The evidence of every training here. Each step's own values of the step columns (what train_step returns,
    not fit's running means) are kept for the epoch; a NaN or infinite one stops training before the epoch is
    saved, so the last good checkpoint stays. At a good epoch's end each column's mean (its last value for the
    columns in `last_value`) goes into `history` ({step column: per-epoch list name}, or a list when the names
    are the same), the epoch's steps are added to <log_dir>/log.csv (rewritten whole, so it only ever holds
    finished epochs) and `save_epoch(number)` writes the grid, weights and checkpoint."""

    def __init__(self, history, columns, *, save_epoch, log_dir=None, last_value=()):
        super().__init__()
        self.names = dict(columns) if isinstance(columns, dict) else {name: name for name in columns}
        self.history_arrays = history
        self.save_epoch, self.log_dir, self.last_value = save_epoch, log_dir, set(last_value)
        self.bad_loss = None
        self.epoch_steps = []  # (steps, len(columns)) as lists

    def finished_epochs(self):
        """Epochs finished so far (resumed ones included): the length of every per-epoch array."""
        return len(next(iter(self.history_arrays.values())))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_steps = []

    def on_train_batch_end(self, step, logs=None):
        values = [float(logs[name]) for name in self.names]
        if not all(math.isfinite(value) for value in values):
            self.bad_loss = f"non-finite loss at epoch {self.finished_epochs() + 1}, step {step + 1}"
            self.model.stop_training = True
            return
        self.epoch_steps.append(values)

    def on_epoch_end(self, epoch, logs=None):
        if self.bad_loss is not None or not self.epoch_steps:
            return
        steps = np.asarray(self.epoch_steps)  # (steps, columns)
        for index, (column, name) in enumerate(self.names.items()):
            value = steps[-1, index] if column in self.last_value else steps[:, index].mean()
            self.history_arrays[name].append(float(value))
        number = self.finished_epochs()
        if self.log_dir is not None:
            self.append_to_step_log(number)
        self.save_epoch(number)

    def append_to_step_log(self, number):
        rows = "".join(f"{number},{step}," + ",".join(f"{value:.6g}" for value in values) + "\n"
                       for step, values in enumerate(self.epoch_steps, start=1))
        log_path = os.path.join(self.log_dir, "log.csv")
        with open(log_path, "rb") as handle:
            data_prep.atomic_write_bytes(log_path, handle.read() + rows.encode())


class TimeBudget(keras.callbacks.Callback):
    """Stops training after the last whole epoch that fits in `minutes` of wall time (counted from this process's
    first epoch): an epoch is begun only when the mean epoch so far would still end inside the budget."""

    def __init__(self, minutes):
        super().__init__()
        self.seconds = 60.0 * minutes
        self.started = None
        self.epochs = 0

    def on_epoch_begin(self, epoch, logs=None):
        if self.started is None:
            self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1
        elapsed = time.perf_counter() - self.started
        if elapsed + elapsed / self.epochs > self.seconds:
            print(f"\ntime budget: {elapsed / 60:.1f} of {self.seconds / 60:g} minutes used after epoch {epoch + 1}; "
                  "another epoch would not fit, stopping here")
            self.model.stop_training = True


def fit_epochs(model, dataset, out_dir, *, epochs, recorder, callbacks=(), steps_per_epoch=None, verbose=1,
               announce=None):
    """fit() from the first unfinished epoch to `epochs` with `recorder` (and `callbacks`); prints `announce`
    (a function of the finished epochs) before it starts. Returns False when there was nothing left to train;
    raises TrainingStopped on a non-finite loss."""
    done = recorder.finished_epochs()
    if done >= epochs:
        print(f"{out_dir} already has {done} epochs; pass a larger --epochs to continue")
        return False
    if announce is not None:
        print(announce(done))
    model.fit(dataset, epochs=epochs, initial_epoch=done, callbacks=[recorder, *callbacks], verbose=verbose,
              shuffle=False, steps_per_epoch=steps_per_epoch)
    if recorder.bad_loss:
        raise TrainingStopped(f"training stopped: {recorder.bad_loss}; the last good checkpoint "
                              f"(epoch {recorder.finished_epochs()}) stays in {out_dir}/checkpoints")
    return True


def train_or_exit(train, *args, **kwargs):
    """Runs a training from a script's main(): a non-finite loss is one line on stderr and exit status 1."""
    try:
        return train(*args, **kwargs)
    except TrainingStopped as stopped:
        print(f"error: {stopped}", file=sys.stderr)
        sys.exit(1)


def training_job(out_dir, config, *, resume, train, result):
    """A script's training from its main(): the resolved config printed and saved in out_dir, then `train()`
    (a non-finite loss: one line and exit status 1), then how long it took and `result` (where to look)."""
    print_config(out_dir, config, resume=resume)
    os.makedirs(out_dir, exist_ok=True)
    write_config(out_dir, config)
    started = time.perf_counter()
    train_or_exit(train)
    print(f"done in {time.perf_counter() - started:.0f} s; {result}")


# ----------------------------------------------------------------------------------------------------------
# Precision, strategy and batched prediction


def native_bfloat16():
    """(True or False, why): whether this machine computes bfloat16 natively. GPUs of compute capability 8.0
    and later (Ampere on) do; CPUs do with AVX512_BF16 or AMX (Intel Sapphire Rapids on, AMD Zen 4 on). Without
    them TensorFlow emulates bfloat16, measured at a third of float32's speed on an Intel Xeon."""
    for device in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(device).get("compute_capability", (0, 0))
        return capability >= (8, 0), f"GPU of compute capability {capability[0]}.{capability[1]}"
    flags = set()
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as handle:
            flags = {word for line in handle if line.startswith("flags") for word in line.split()}
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    return bool(native), ("CPU with " + " and ".join(native)) if native else "CPU without AVX512_BF16 or AMX"


@contextlib.contextmanager
def dtype_policy(name):
    """Keras's global dtype policy set to `name` while models are built (layers keep the policy they were made
    with), and put back afterwards, so that nothing built later (MTCNN, a classifier) inherits it."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def resolve_precision(precision):
    """--precision auto -> mixed_bfloat16 where bfloat16 is native, float32 elsewhere; returns (policy, why)."""
    if precision != "auto":
        return precision, "as asked"
    native, why = native_bfloat16()
    return ("mixed_bfloat16" if native else "float32"), why


def make_strategy(name, *, worker_timeout=None):
    """tf.distribute for several GPUs ('mirrored') or machines ('multiworker', configured by TF_CONFIG, whose
    collectives give up after `worker_timeout` seconds without the other workers)."""
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        # All GPUs; without GPUs, every logical CPU device (how the tests get two replicas on one CPU).
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multiworker":
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=worker_timeout)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    raise ValueError(f"unknown strategy {name!r}; expected none, mirrored or multiworker")


def worker_role(strategy):
    """(is_chief, "worker 1"): this process's part under --strategy multiworker, read from TF_CONFIG (the chief is
    the task of type "chief", or worker 0 of a cluster without one); (True, None) for any other strategy."""
    if strategy != "multiworker":
        return True, None
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise data_prep.DataError('--strategy multiworker needs TF_CONFIG, e.g. \'{"cluster": {"worker": ["host1:12345", '
                                  '"host2:12345"]}, "task": {"type": "worker", "index": 0}}\'')
    try:
        tf_config = json.loads(text)
        cluster, kind, index = tf_config["cluster"], tf_config["task"]["type"], int(tf_config["task"]["index"])
        if index < 0 or index >= len(cluster[kind]):
            raise IndexError(index)
    except (ValueError, KeyError, TypeError, IndexError) as error:
        raise data_prep.DataError(f"TF_CONFIG is not a cluster and a task of it ({type(error).__name__}: {error})")
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster), f"{kind} {index}"


def worker_directory(run_dir, *, resume, task):
    """Where a worker that is not the chief writes: a private temporary directory (removed by the caller when
    training ends), so that only the chief writes the run directory. A resumed worker starts from the run
    directory's checkpoint, copied in (on machines without a shared disk, copy the chief's run directory to the
    same path on each worker first)."""
    private = tempfile.mkdtemp(prefix=f"facemath-{task.replace(' ', '')}-")
    if resume:
        for name in os.listdir(run_dir):
            source = os.path.join(run_dir, name)
            if os.path.isdir(source):
                if name == "checkpoints":
                    os.makedirs(os.path.join(private, name))
                    shutil.copy2(os.path.join(source, "last.npz"), os.path.join(private, name, "last.npz"))
            else:
                shutil.copy2(source, os.path.join(private, name))
    return private


def to_float_batch(images):
    """A uint8 batch (what the tf.data pipelines carry) as float32 in [-1, 1]; a float batch as float32."""
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 127.5 - 1.0
    return tf.cast(images, tf.float32)


def predict_batches(model, inputs, *, batch_size=256, training=False):
    """model(inputs) in batches, as float32 NumPy; uint8 images are scaled to [-1, 1] first. A model with
    several outputs gives a list of arrays."""
    inputs = np.asarray(inputs)
    outputs = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start:start + batch_size]
        batch = data_prep.to_float(batch) if batch.dtype == np.uint8 else batch.astype(np.float32)
        result = model(batch, training=training)
        outputs.append([keras.ops.convert_to_numpy(part) for part in result] if isinstance(result, (list, tuple))
                       else keras.ops.convert_to_numpy(result))
    if outputs and isinstance(outputs[0], list):
        return [np.concatenate(parts).astype(np.float32) for parts in zip(*outputs)]
    return np.concatenate(outputs).astype(np.float32)
