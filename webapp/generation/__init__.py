"""The batch service: create batches and photos, claim and finish generations, reap."""
