"""Lab 04's checks of the saved adapter folder: the guide's adapter-only rules, shared with the capstone
(checks.adapter_files), run in the kernel and again outside it on the lab's folders.
"""

from __future__ import annotations

from checks.adapter_files import adapter_only_saved, adapter_trained

__all__ = ["adapter_only_saved", "adapter_trained"]
