"""Progress shown while a sweep runs: a bar over the trials (a Tune callback) and one over
the comparison's jobs."""

from __future__ import annotations

from typing import Any


class TrialProgress:
    """A Tune callback that draws one progress bar over the sweep's trials."""

    def __new__(cls, total: int):
        from ray import tune

        class _Progress(tune.Callback):
            def __init__(self) -> None:
                self.total, self.bar, self.failed, self.last = total, None, 0, {}

            def __getstate__(self) -> dict:  # Tune pickles callbacks with its experiment state
                return {k: v for k, v in self.__dict__.items() if k != "bar"} | {"bar": None}

            def setup(self, **info) -> None:  # the experiment starts: start the clock
                from tqdm import tqdm

                self.bar = tqdm(total=self.total, unit="trial", desc="training", dynamic_ncols=True)

            def _bar(self):
                if self.bar is None:  # restored from a pickle
                    self.setup()
                return self.bar

            def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
                training = trial.config["trial"]["training"]
                more = training.get("min_steps") or training.get("budget") == "steps"  # more epochs on a subset
                of = "" if more else f"/{training['epochs']}"
                self.last[trial.trial_id] = f"{trial}: epoch {result.get('epoch')}{of}"
                running = sum(t.status == "RUNNING" for t in trials)
                self._bar().set_postfix_str(f"{running} running | {self.last[trial.trial_id]}"
                                            f" loss {result.get('train_loss', float('nan')):.3f}")

            def on_trial_complete(self, iteration, trials, trial, **info) -> None:
                self._bar().update(1)

            def on_trial_error(self, iteration, trials, trial, **info) -> None:
                self.failed += 1
                self._bar().update(1)

            def on_experiment_end(self, trials, **info) -> None:
                if self.bar is not None:
                    self.bar.close()

        return _Progress()


def comparison_progress(description: str, total: int) -> Any:
    """Print what the comparison will do, then draw a bar over its jobs."""
    from tqdm import tqdm

    print(description)
    return tqdm(total=total, unit="job", desc="comparing", dynamic_ncols=True)
