"""The OCR engines by name, loaded lazily (each needs its own optional package or program)."""

from __future__ import annotations

from models.ocr.base import OcrEngine

ENGINES = ("rapidocr", "tesseract")


def load_ocr_engine(name: str = "rapidocr", threads: int = 1, rec_batch: int = 16, languages: str = "eng") -> OcrEngine:
    """``rapidocr`` (the default: the ``ocr`` extra) or ``tesseract`` (the Debian program)."""
    from blipsearch.errors import InvalidInputError

    if name == "rapidocr":
        from models.ocr.rapid import RapidOcrEngine

        return RapidOcrEngine(threads=threads, rec_batch=rec_batch)
    if name == "tesseract":
        from models.ocr.tesseract import TesseractEngine

        return TesseractEngine(languages=languages, threads=threads)
    raise InvalidInputError(f"Unknown OCR engine {name!r}: use one of {', '.join(ENGINES)} (--ocr-engine).")
