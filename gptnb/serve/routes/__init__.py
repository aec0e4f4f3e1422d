"""The server's routes, one router per resource: models, completions (text and chat), files, fine-tuning jobs."""
