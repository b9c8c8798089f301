"""Batch specs: YAML loading with positions, validation, and ``${{ }}`` templates."""

from runner.spec.loader import load_spec, load_spec_text
from runner.spec.models import BatchSpec, EnvEntry, Step
from runner.spec.template import render_template

__all__ = ["BatchSpec", "EnvEntry", "Step", "load_spec", "load_spec_text", "render_template"]
