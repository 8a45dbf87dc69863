"""The original ScaleDown code's import path: `from scaledown.data.teacher import generate_teacher_answers`
(scaledown/compat.py; the build's teacher is scaledown/build/teacher.py). Nothing in the project imports this."""

from scaledown.compat import generate_teacher_answers

__all__ = ["generate_teacher_answers"]
