"""Layer 2 (parts). Image bytes from any uri kind (files, tar members) and safe decoding (pixel guard, EXIF,
RGB, JPEG draft). Imports nothing of blipsearch but the ground (``blipsearch.errors``)."""
