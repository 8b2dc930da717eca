"""The routes of ``pagelens serve``, one router per kind of thing served."""
