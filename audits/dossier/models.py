"""Records of dossier exports."""
