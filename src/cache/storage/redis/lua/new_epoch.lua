-- Starts a new epoch now (`cache clear`).
return text(new_epoch())
