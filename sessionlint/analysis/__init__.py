"""Analysis layer: facts about names, sessions and control flow; no policy."""
