"""Layer 2 (parts). Records (Arrow/Parquet, the source of truth), collection manifests and the SQL catalog."""
