"""labutils: what the PEFT course labs import for set-up, course models and data, checks and plots.

The PEFT pattern a lab teaches is written out in the lab itself; this package only prepares the
ground (models, data, environment) and grades the result.
"""

from labutils.doctor import compute_dtype, precision_flags, training_dtype
from labutils.livecheck import check
from labutils.profiles import course_model, current_profile

# compute_dtype / training_dtype / precision_flags: the course's one bf16 rule for this machine (lab 00)
__all__ = ["check", "compute_dtype", "course_model", "current_profile", "precision_flags", "training_dtype"]
__version__ = "0.1.0"
