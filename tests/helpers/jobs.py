"""Job configurations the end-to-end tests run."""

# A few small steps: every process real, small enough for CPUs.
SMALL_JOB = """
learner:
  batch_prompts: 4
  mini_batch_prompts: 4
  micro_batch: 16
  checkpoint_every: 2
  sampling: {temperature: 1.0, max_tokens: 96}
"""
