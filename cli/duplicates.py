"""placeholder"""

def duplicates() -> None:
    """placeholder"""
