"""annotassist: active labeling for semantic segmentation."""
from .runtime.threads import prepare_openmp as _prepare_openmp

# before anything imports torch: idle OpenMP threads sleep instead of spinning (see runtime/threads.py)
_prepare_openmp()
