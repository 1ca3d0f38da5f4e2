"""Content governance: moderation, policies, review queue, audit and AIGC labels."""
