"""Reading and decoding media: image bytes from files, tar members and uploads."""
