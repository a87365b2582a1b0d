"""mridomain.sim"""
