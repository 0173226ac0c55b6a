"""Text in images (OCR): one engine base (base.py), one module per engine, a text-presence gate."""
