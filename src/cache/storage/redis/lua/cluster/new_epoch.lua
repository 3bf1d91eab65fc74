floor()
return text(new_epoch())
