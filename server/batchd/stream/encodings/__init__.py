"""Stream encodings: one module each behind one interface (``base``), one registry."""
