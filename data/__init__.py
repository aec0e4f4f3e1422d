"""gptnb's data files (CSV), installed as the package ``gptnb.datafiles``; see ``gptnb.paths.data_dir``."""
