"""A run's records on disk, typed: its folder's layout, metrics.json (RunSummary), captions.json
(CaptionEntry), and a sweep's runs as the report reads them. One reader and writer for each."""
