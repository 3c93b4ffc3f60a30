"""Pure audio code for live calls: streaming resampling, playout pacing, generated tones.

No sockets and no clocks of their own (the playout model takes the time as an argument), so
every rule here is unit-tested without a network. The media gateway is the only user today.
"""
