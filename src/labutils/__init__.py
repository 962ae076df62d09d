"""labutils: what the PEFT course labs import for set-up, course models and data, checks and plots.

The PEFT pattern a lab teaches is written out in the lab itself; this package only prepares the
ground (models, data, environment) and grades the result.
"""

from labutils.livecheck import check
from labutils.profiles import course_model, current_profile

__all__ = ["check", "course_model", "current_profile"]
__version__ = "0.1.0"
