-- A question whose answer is linked but whose record was never closed (its bot process died
-- while showing the answer) is now taken over by a running bot, which shows the answer again.
-- Those left by earlier versions were shown long ago: close them rather than show them again.
UPDATE slack_answers SET question = NULL, owner = NULL WHERE answer_id IS NOT NULL AND question IS NOT NULL;
