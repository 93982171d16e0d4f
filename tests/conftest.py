"""Settings every test run needs: Ray on loopback only, no token file, no usage stats."""

from __future__ import annotations

import os

os.environ.update(
    {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
)
# A hub token in the developer's environment must not leak into tests.
for _name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELSCOPE_API_TOKEN", "HF_ENDPOINT",
              "MODELSCOPE_ENDPOINT", "RAY_ADDRESS"):
    os.environ.pop(_name, None)
