"""Model file formats: detection by content, validation and loaders."""
