"""The relevance teacher: soft-target LLM classifier, explainable mode, and labeler.

See docs/teacher.md. Entry points: ``relkd teacher`` (``training.teacher.cli.app``),
``python -m training.teacher.train`` and ``training.teacher.labeler.TeacherLabeler``.
"""
