"""The paper's claims as experiments (SCIENCE.md): each a list of variants that differ in one setting, distilled
(or trained) with the same data, steps and seeds, evaluated on held-out windows and run by the engine on held-out
Spec-Bench questions, with tables (``results.md``, ``results.json``) and a plot per experiment.

``run_experiment(name, ExperimentConfig(...))`` runs one; :data:`EXPERIMENTS` lists them; ``ptp experiment NAME``
is the command. Every run is resumable, so an experiment may span several limited runs of a machine.
"""

from ptp.science.config import ExperimentConfig, Variant
from ptp.science.experiments import EXPERIMENTS, Experiment
from ptp.science.runner import run_experiment

__all__ = ["EXPERIMENTS", "Experiment", "ExperimentConfig", "Variant", "run_experiment"]
