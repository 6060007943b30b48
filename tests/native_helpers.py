"""What the native-kernel tests share (``test_conv_native*``, ``test_pool_native``,
``test_norm_native``): whether the kernels load here (a failed build's warning silenced: the
tests skip instead), the skip mark, and the custom-call targets a compiled program names."""
from __future__ import annotations

import re
import warnings

import pytest

from jaxcnn._conv import native

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    AVAILABLE = native.available()
needs_kernels = pytest.mark.skipif(not AVAILABLE, reason="native kernels unavailable here")
TARGET = re.compile(r'custom_call_target="(jaxcnn_[a-z_]+)"')
