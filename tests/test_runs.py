"""The run module: the bookkeeping every training shares, tested once here on a model of two weights."""

import argparse
import os

import numpy as np
import pytest

import data_prep
import runs
import keras  # after runs, which chooses the TensorFlow backend
import tensorflow as tf


class Scripted(keras.Model):
    """train_step returns the next row of `values` as its step columns; one weight moves by 1 per step."""

    def __init__(self, values):
        super().__init__()
        self.values = tf.constant(np.asarray(values, np.float32))
        self.weight = self.add_weight(shape=(2,), initializer="zeros", name="weight")
        self.step = self.add_weight(shape=(), initializer="zeros", name="step", trainable=False)

    def train_step(self, data):
        row = self.values[tf.cast(self.step, tf.int32)]
        self.step.assign_add(1.0)
        self.weight.assign_add(tf.ones(2))
        return {"loss": row[0], "extra": row[1]}

    def state_variables(self):
        return [self.weight, self.step]


def fit(model, tmp_path, history, *, epochs, save=None, last_value=()):
    saved = []
    recorder = runs.EpochRecorder(history, {"loss": "losses", "extra": "extras"}, log_dir=str(tmp_path),
                                  last_value=last_value, save_epoch=save or saved.append)
    data = tf.data.Dataset.from_tensors(np.zeros(1, np.float32)).repeat()
    model.compile()
    trained = runs.fit_epochs(model, data, str(tmp_path), epochs=epochs, recorder=recorder, steps_per_epoch=2,
                              verbose=0)
    return trained, saved


def test_the_recorder_keeps_each_epochs_means_log_rows_and_last_values(tmp_path):
    runs.start_step_log(str(tmp_path), ("loss", "extra"))
    model = Scripted([[1, 10], [3, 20], [5, 30], [7, 40]])
    history = {"losses": [], "extras": []}
    trained, saved = fit(model, tmp_path, history, epochs=2, last_value=("extra",))
    assert trained and saved == [1, 2]
    assert history == {"losses": [2.0, 6.0], "extras": [20.0, 40.0]}  # means 2 and 6; the last values 20 and 40
    log = runs.read_step_log(str(tmp_path))
    assert log["epoch"].tolist() == [1, 1, 2, 2] and log["loss"].tolist() == [1, 3, 5, 7]


def test_a_non_finite_loss_stops_before_its_epoch_is_saved(tmp_path):
    runs.start_step_log(str(tmp_path), ("loss", "extra"))
    model = Scripted([[1, 0], [2, 0], [np.nan, 0], [4, 0]])
    history = {"losses": [], "extras": []}
    with pytest.raises(runs.TrainingStopped, match="non-finite loss at epoch 2, step 1"):
        fit(model, tmp_path, history, epochs=2)
    assert history["losses"] == [1.5]  # only the first epoch
    assert runs.read_step_log(str(tmp_path))["epoch"].tolist() == [1, 1]


def test_nothing_left_to_train_is_said_and_fits_nothing(tmp_path, capsys):
    runs.start_step_log(str(tmp_path), ("loss", "extra"))
    model = Scripted([[1, 0]] * 4)
    trained, saved = fit(model, tmp_path, {"losses": [1.0, 1.0], "extras": [0.0, 0.0]}, epochs=2)
    assert not trained and saved == [] and int(model.step.numpy()) == 0
    assert "already has 2 epochs" in capsys.readouterr().out


def test_a_checkpoint_restores_every_variable_and_the_history(tmp_path):
    model = Scripted([[1, 0]] * 4)
    model.weight.assign([3.0, -1.0])
    model.step.assign(7.0)
    runs.save_checkpoint(str(tmp_path), model.state_variables(), {"losses": [0.5, 0.25]},
                         arrays={"losses": "losses.npy"})
    fresh = Scripted([[1, 0]] * 4)
    history = runs.load_checkpoint(str(tmp_path), fresh.state_variables())
    assert history == {"losses": [0.5, 0.25]}
    np.testing.assert_array_equal(fresh.weight.numpy(), [3.0, -1.0])
    assert float(fresh.step.numpy()) == 7.0
    np.testing.assert_array_equal(np.load(tmp_path / "losses.npy"), np.float32([0.5, 0.25]))
    with pytest.raises(data_prep.DataError, match="holds 2 arrays, the model has 1 variables"):
        runs.load_checkpoint(str(tmp_path), fresh.state_variables()[:1])
    with pytest.raises(data_prep.DataError, match="no checkpoint to resume from"):
        runs.load_checkpoint(str(tmp_path / "none"), fresh.state_variables())


def test_resuming_takes_only_the_resumable_flags_the_user_typed(tmp_path):
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--kernel", type=int, default=5)
    runs.write_config(str(tmp_path), {"epochs": 3, "filters": 32})  # saved before --kernel existed
    typed = runs.typed_flags(parser, ["--epochs", "9", "--kernel", "5"])
    assert typed == {"epochs", "kernel"}
    config = runs.resumed_config({"epochs": 9, "filters": 64, "kernel": 5}, str(tmp_path), typed=typed,
                                 resumable={"epochs"}, defaults={"kernel": 5})
    assert config["epochs"] == 9 and config["filters"] == 32 and config["resume"] is True
    assert len(config["resumed_with"]) == 1
    with pytest.raises(data_prep.DataError, match="--filters cannot change when resuming"):
        runs.resumed_config({"epochs": 3, "filters": 64}, str(tmp_path), typed={"filters"}, resumable={"epochs"})


def test_saved_epochs_skip_a_killed_write_and_load_the_newest(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="d")])
    for epoch in (1, 3):
        model.get_layer("d").set_weights([np.full((2, 1), float(epoch), np.float32), np.zeros(1, np.float32)])
        runs.save_weights_atomic(model, runs.epoch_weights_path(str(tmp_path), "net", epoch))
    (checkpoints / "net_epoch_004.tmp-123.weights.h5").write_bytes(b"half")
    assert runs.saved_epochs(str(tmp_path), "net") == [1, 3]
    build = lambda: keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="d")])  # noqa: E731
    newest = runs.load_saved_network(str(tmp_path), "net", build)
    assert float(newest.get_layer("d").get_weights()[0][0, 0]) == 3.0
    with pytest.raises(data_prep.DataError, match="no net for epoch 2; saved epochs: \\[1, 3\\]"):
        runs.load_saved_network(str(tmp_path), "net", build, epoch=2)


def test_batched_prediction_scales_uint8_and_keeps_several_outputs():
    image = keras.Input((1,))
    model = keras.Model(image, [image * 2.0, image + 1.0])
    pixels = np.array([[0], [255], [51]], np.uint8)  # -> -1, 1, -0.6
    doubled, shifted = runs.predict_batches(model, pixels, batch_size=2)
    np.testing.assert_allclose(doubled[:, 0], [-2.0, 2.0, -1.2], atol=1e-6)
    np.testing.assert_allclose(shifted[:, 0], [0.0, 2.0, 0.4], atol=1e-6)


def test_a_command_word_is_required_and_named_in_the_error():
    assert runs.split_command(["edits", "--run", "x"], ("edits",), "scores.py") == ("edits", ["--run", "x"])
    with pytest.raises(data_prep.DataError, match="expected a command \\(edits\\), got fly"):
        runs.split_command(["fly"], ("edits",), "scores.py")


def test_time_budget_stops_before_an_epoch_that_would_not_fit(monkeypatch):
    # 60 s budget, epochs of 25 s: after epoch 1 (25 + 25 = 50 s expected) another fits; after epoch 2 (50 + 25)
    # it would end at 75 s, so training stops there.
    budget = runs.TimeBudget(1.0)
    budget.set_model(Scripted([[1, 0]]))
    budget.model.stop_training = False
    clock = iter([0.0, 25.0, 50.0])
    monkeypatch.setattr(runs.time, "perf_counter", lambda: next(clock))
    budget.on_epoch_begin(0)
    budget.on_epoch_end(0)
    assert not budget.model.stop_training
    budget.on_epoch_begin(1)
    budget.on_epoch_end(1)
    assert budget.model.stop_training


def test_the_newest_run_is_the_one_whose_generator_was_written_last(tmp_path):
    for name, when, config in (("old", 100, {"latent_dim": 8}), ("new", 200, {"latent_dim": 8}),
                               ("noise", 300, {"latent_dim": 8, "kind": "noise"}), ("makeover", 400, {})):
        runs.write_config(tmp_path / name, config)
        (tmp_path / name / "generator.keras").write_bytes(b"")
        os.utime(tmp_path / name / "generator.keras", (when, when))
    assert runs.newest_run(str(tmp_path)) == str(tmp_path / "new")  # baselines and makeover runs are passed over
    with pytest.raises(data_prep.DataError, match="no trained run with a generator in .*; train one first"):
        runs.newest_run(str(tmp_path / "empty"))


def test_a_run_of_another_script_is_refused_in_one_line(tmp_path):
    runs.write_config(tmp_path / "gan", {"latent_dim": 8})
    assert runs.read_config(tmp_path / "gan") == {"latent_dim": 8}
    with pytest.raises(data_prep.DataError, match="is not a makeover run"):
        runs.read_config(tmp_path / "gan", model="makeover")
    with pytest.raises(data_prep.DataError, match="run not found: .*python makeover.py --name NAME"):
        runs.read_config(tmp_path / "missing", model="makeover")
