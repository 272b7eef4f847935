"""What the built-in plugins share: pure losses, sample selection, schedules and the face renderer.

Plugin folders cannot import each other, so code two methods (or a dataset and a benchmark) need
lives here: :mod:`~nlbench.lib.losses`, :mod:`~nlbench.lib.selection` (small-loss selection,
relabelling), :mod:`~nlbench.lib.schedules` and :mod:`~nlbench.lib.synthface`. These modules
import only the plugin API, never a stage of the run.
"""
